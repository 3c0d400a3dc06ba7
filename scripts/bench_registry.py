"""Global registry: register latency, time until every node sees a new name, and time to
one owner per name after a partition heals. Five nodes on loopback tcp in this process
(one event loop serves all five, so each figure includes the others' work: an upper bound).

    python scripts/bench_registry.py [--names 2000] [--conflicts 200] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AsyncExitStack

from progress import each, stages

import zmesh


async def idle(proc: zmesh.Process) -> None:
    await proc.receive()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def cluster(stack: AsyncExitStack, names: list[str]) -> list[zmesh.Node]:
    nodes = [await stack.enter_async_context(zmesh.Node(n, cookie="bench")) for n in names]
    for node in nodes[1:]:
        await node.connect(nodes[0].address)  # type: ignore[arg-type]
    while any(len(n.nodes()) != len(nodes) - 1 for n in nodes):
        await asyncio.sleep(0.01)
    return nodes


async def register_and_visibility(n: int) -> tuple[list[float], list[float]]:
    async with AsyncExitStack() as stack:
        nodes = await cluster(stack, [f"r{i}" for i in range(5)])
        register, visible = [], []
        for i in range(n):
            home = nodes[i % 5]
            pid = home.spawn(idle)
            start = time.perf_counter()
            assert await home.register(f"name{i}", pid)
            register.append(time.perf_counter() - start)
            while not all(node.whereis(f"name{i}") == pid for node in nodes):
                await asyncio.sleep(0)
            visible.append(time.perf_counter() - start)
        return register, visible


async def heal(conflicts: int) -> float:
    """Two sides register the same names apart, then join: seconds to one owner per name."""
    async with AsyncExitStack() as stack:
        left = await cluster(stack, ["l0", "l1"])
        right = await cluster(stack, ["h0", "h1", "h2"])
        for i in range(conflicts):
            for side in (left, right):
                home = side[i % len(side)]
                assert await home.register(f"c{i}", home.spawn(idle))
        everyone = left + right
        start = time.perf_counter()
        await right[0].connect(left[0].address)  # type: ignore[arg-type]
        while True:
            owners = [tuple(n.whereis(f"c{i}") for n in everyone) for i in range(conflicts)]
            if all(len(set(o)) == 1 and o[0] is not None for o in owners) and all(
                len(n.nodes()) == 4 for n in everyone
            ):
                return time.perf_counter() - start
            await asyncio.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", type=int, default=2000)
    parser.add_argument("--conflicts", type=int, default=200)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    with stages(4, "registry") as step:
        register, visible = runner(register_and_visibility(args.names))
        step("register")
        heals = [runner(heal(args.conflicts)) for _ in each(range(3), step, "heal")]
    print(
        f"registry, 5 nodes in one process on loopback ({'uvloop' if args.uvloop else 'asyncio'})"
    )
    print(f"{'figure':46} {'p50':>9} {'p99':>9}  target")
    print(f"{'register (ms)':46} {statistics.median(register) * 1e3:9.3f} "
          f"{pct(register, 0.99) * 1e3:9.3f}  median <= 2 ms")  # fmt: skip
    print(f"{'visible on all 5 nodes (ms)':46} {statistics.median(visible) * 1e3:9.3f} "
          f"{pct(visible, 0.99) * 1e3:9.3f}  p99 <= 10 ms")  # fmt: skip
    print(f"{f'heal: one owner for {args.conflicts} clashing names (ms)':46} "
          f"{statistics.median(heals) * 1e3:9.1f} {max(heals) * 1e3:9.1f}  <= 1000 ms")  # fmt: skip


if __name__ == "__main__":
    main()
