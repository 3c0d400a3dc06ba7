"""Failure detection with default settings: how long until a node that was SIGKILLed or
SIGSTOPped is declared down by a peer. Real `zmesh join` processes on loopback.

    python scripts/bench_failure.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time

from progress import each, stages

import zmesh


def join(name: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmesh", "join", name, "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, ZMESH_COOKIE="bench"),
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


async def detect(sig: signal.Signals) -> float:
    proc, address = join("victim")
    try:
        async with zmesh.Node("watcher", cookie="bench") as node:
            await node.connect(address)
            await asyncio.sleep(0.5)  # steady state: heartbeats flowing
            start = time.perf_counter()
            proc.send_signal(sig)
            while "victim" in node.nodes():
                await asyncio.sleep(0.001)
            return time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = zmesh.NodeConfig()
    print(f"failure detection, defaults: tick {cfg.tick} s, down after {cfg.down_after} s")
    print(f"{'signal':10} {'median':>10} {'max':>10}  target")
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        with stages(args.rounds, sig.name) as step:
            times = [asyncio.run(detect(sig)) for _ in each(range(args.rounds), step, "round")]
        print(f"{sig.name:10} {statistics.median(times):9.3f}s {max(times):9.3f}s  <= 3 s")


if __name__ == "__main__":
    main()
