"""How long each inspection command takes, as a user runs it, on a 5-node local cluster.

Five `zmesh join` nodes on loopback; each command is run as a fresh `zmesh` process
(interpreter start included, as a user sees it) and its wall time is the median of
--repeat runs. Then `zmesh ps` again with 10,000 processes spread over the nodes.
Targets (issue 13): every command <= 0.5 s; `ps` with 10,000 processes <= 1 s.

    python scripts/bench_cli.py [--repeat 5] [--processes 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path

from progress import each, stages

HERE = Path(__file__).resolve().parent
COOKIE = "bench-cli"
ENV = dict(os.environ, ZMESH_COOKIE=COOKIE, PYTHONPATH=str(HERE))
UP = re.compile(r"zmesh: node (\S+) up at (\S+)")


def start(name: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "zmesh", "join", name, "--listen", "tcp://127.0.0.1:0",
           "--load", "bench_app", "--log-level", "warning", *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
        match = UP.search(proc.stdout.readline())
        if match:
            return proc, match.group(2)
    proc.kill()
    raise RuntimeError(f"{name} did not come up")


def zmesh(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "zmesh", *args], capture_output=True,
                         text=True, env=ENV, timeout=60)  # fmt: skip
    took = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"zmesh {' '.join(args)}: {out.stderr.strip()}")
    return took, out


def timed(args: tuple[str, ...], repeat: int) -> float:
    return statistics.median(zmesh(*args)[0] for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--processes", type=int, default=10_000)
    args = parser.parse_args()
    names = [f"b{i}" for i in range(1, 6)]
    procs: list[subprocess.Popen[str]] = []
    commands: list[tuple[str, tuple[str, ...]]] = [
        ("nodes", ("nodes",)),
        ("ps", ("ps",)),
        ("info b3", ("info", "b3")),
        ("whereis counter", ("whereis", "counter")),
        ("call counter", ("call", "counter", '"get"')),
        ("send counter", ("send", "counter", '"hello"')),
        ("ring", ("ring",)),
        ("nodes --json", ("nodes", "--json")),
        ("ps --json", ("ps", "--json")),
    ]
    results: list[tuple[str, float, str]] = []
    with stages(len(names) + len(commands) + 3, "cli") as step:
        try:
            first, seed_address = start(names[0])
            procs.append(first)
            step("join b1")
            for name in each(names[1:], step, "join"):
                procs.append(start(name, "--seed", seed_address)[0])
            seed = ("--seed", seed_address)
            ready = "len(node.nodes()) == 5"  # the shell's node sees all five
            for _ in range(100):
                if zmesh("shell", *seed, "-c", ready)[1].stdout.strip() == "True":
                    break
                time.sleep(0.2)
            zmesh("shell", *seed, "-c",
                  "await node.start('bench_app:Counter', name='counter', on='b3')")  # fmt: skip
            step("cluster up")
            zmesh(*commands[0][1], *seed)  # warm the OS caches
            for label, command in commands:
                results.append((label, timed((*command, *seed), args.repeat), "<= 0.5 s"))
                step(label)
            per_node = args.processes // len(names)
            code = "; ".join(
                f"await node.spawn_remote('{n}', 'bench_app:crowd', {per_node})" for n in names
            )
            zmesh("shell", *seed, "-c", code)
            total = 0
            for _ in range(100):  # until every process is up
                total = len(zmesh("ps", "--json", *seed)[1].stdout.splitlines())
                if total >= args.processes:
                    break
                time.sleep(0.2)
            step("crowd")
            crowded = [(f"ps, {total:,} processes", ("ps",)),
                       (f"ps --json, {total:,} processes", ("ps", "--json"))]  # fmt: skip
            for label, command in crowded:
                results.append((label, timed((*command, *seed), args.repeat), "<= 1 s"))
            step("ps crowd")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    print(f"zmesh CLI, 5 nodes on loopback (median of {args.repeat}; a fresh `zmesh` each run)")
    print(f"{'command':36} {'wall time':>10}  target")
    for label, seconds, target in results:
        print(f"{label:36} {seconds:9.3f}s  {target}")
    floor = timed(("--help",), args.repeat)
    print(f"{'(zmesh --help: interpreter + imports)':36} {floor:9.3f}s")


if __name__ == "__main__":
    main()
