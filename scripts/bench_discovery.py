"""Discovery: time from the last of N `zmesh join` processes coming up to a full mesh
(every node connected to every other), per strategy; and how long a SIGKILLed node,
restarted at its address, takes to be reconnected by a peer that names no seed.
Real OS processes on loopback.

    python scripts/bench_discovery.py [--sizes 3 16] [--strategies range gossip]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from ports import free_block

import zmesh

COOKIE = "bench-discovery"


def launch(name: str, listen: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zmesh", "join", name, "--listen", listen, *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, ZMESH_COOKIE=COOKIE),
    )  # fmt: skip


def wait_up(procs: list[subprocess.Popen[str]], timeout: float = 60.0) -> float:
    """perf_counter() when the last of `procs` printed its "up" line."""
    sel = selectors.DefaultSelector()
    for p in procs:
        assert p.stdout is not None
        sel.register(p.stdout, selectors.EVENT_READ, p)
    pending, last = set(procs), 0.0
    deadline = time.perf_counter() + timeout
    while pending and time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=1):
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if " up at " in line:
                last = time.perf_counter()
                pending.discard(key.data)
                sel.unregister(key.fileobj)
    if pending:
        raise RuntimeError(f"{len(pending)} nodes did not come up")
    return last


async def full_mesh(observer: zmesh.Node, names: list[str], timeout: float = 60.0) -> float:
    """perf_counter() when every node reports every other as a peer."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if sorted(observer.nodes()) == names:
            infos = await asyncio.gather(*(observer.node_info(n) for n in names))
            if all(len(i["nodes"]) == len(names) - 1 for i in infos):
                return time.perf_counter()
        await asyncio.sleep(0.02)
    raise RuntimeError("no full mesh")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def mesh_time(strategy: str, n: int) -> float:
    base = free_block(n)
    spec = {
        "range": f"range:127.0.0.1:{base}-{base + n - 1}",
        "gossip": f"gossip:239.255.77.90:{free_block(1)}",
    }[strategy]
    names = [f"b{i:02d}" for i in range(n)]
    procs = [
        launch(name, f"tcp://127.0.0.1:{base + i}", "--discover", spec)
        for i, name in enumerate(names)
    ]
    try:
        last_up = wait_up(procs)
        async with zmesh.Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(f"tcp://127.0.0.1:{base}")
            return await full_mesh(observer, names) - last_up
    finally:
        stop(procs)


async def reconnect_time() -> float:
    """b names nobody; a joins b, is SIGKILLed, restarted at its address with no seed:
    seconds from a's restart printing "up" to b seeing it again."""
    base = free_block(2)
    a_addr, b_addr = (f"tcp://127.0.0.1:{base + i}" for i in range(2))
    b = launch("rb", b_addr)
    a = launch("ra", a_addr, "--seed", b_addr)
    procs = [a, b]
    try:
        wait_up(procs)
        async with zmesh.Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(b_addr)
            while sorted(observer.nodes()) != ["ra", "rb"]:
                await asyncio.sleep(0.02)
            a.send_signal(signal.SIGKILL)
            a.wait()
            while (await observer.node_info("rb"))["nodes"]:
                await asyncio.sleep(0.02)
            await asyncio.sleep(3.0)  # b's backoff has reached its cap by now
            a = launch("ra", a_addr)
            procs.append(a)
            up = wait_up([a])
            while "ra" not in (await observer.node_info("rb"))["nodes"]:
                await asyncio.sleep(0.01)
            return time.perf_counter() - up
    finally:
        stop(procs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 16])
    parser.add_argument("--strategies", nargs="+", default=["range", "gossip"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for strategy in args.strategies:
        for n in args.sizes:
            times = [await mesh_time(strategy, n) for _ in range(args.rounds)]
            print(f"{strategy:7} n={n:2}: full mesh {min(times):.2f}-{max(times):.2f} s "
                  f"after the last node is up ({args.rounds} rounds)", flush=True)  # fmt: skip
    times = [await reconnect_time() for _ in range(args.rounds)]
    print(f"reconnect after SIGKILL+restart, no seed naming it: "
          f"{min(times):.2f}-{max(times):.2f} s after it is up", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
