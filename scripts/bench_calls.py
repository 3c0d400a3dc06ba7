"""GenServer call latency (local and remote), pipelined remote calls, and supervised
restart time.

The remote figures sit beside raw pyzmq measured in the same run (the baselines of
bench_remote.py): a blocking DEALER/ROUTER ping-pong for the call's latency, and the same
echo server sent every request before any reply is read for the pipelined calls
(`--in-flight` calls to one GenServer at once: each its own task, as `asyncio.gather`
runs them, and then as many `node.send_request` futures from one task).

Two floors of the event loop itself, measured in the same run, show zmesh's own share:
for the local call, two tasks handing a future back and forth (no zmesh); for the
pipelined calls, as many tasks gathered, each awaiting a future that another task
resolves a loop iteration later (no I/O, no zmesh).

    python scripts/bench_calls.py [--calls 20000] [--remote-calls 5000] [--in-flight 20000]
                                  [--repeat 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_app
from bench_remote import percentile, raw, run, start_far_node
from progress import each, stages

import zmesh


async def timed_calls(node: zmesh.Node, pid: zmesh.Pid, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await node.call(pid, "inc")
        samples.append(time.perf_counter() - t)
    return samples


async def future_ping_pong(n: int) -> list[float]:
    """The local call's floor: a task hands a future to a server task and awaits it."""
    loop = asyncio.get_running_loop()
    inbox: list[asyncio.Future[int]] = []
    wake: list[asyncio.Future[None]] = []

    async def server() -> None:
        while True:
            waiter = loop.create_future()
            wake.append(waiter)
            await waiter
            inbox.pop().set_result(1)

    serving = loop.create_task(server())
    await asyncio.sleep(0)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        reply = loop.create_future()
        inbox.append(reply)
        wake.pop().set_result(None)
        await reply
        samples.append(time.perf_counter() - t)
    serving.cancel()
    return samples


async def gathered_tasks(n: int) -> float:
    """The pipelined calls' floor: `n` tasks gathered, each awaiting a future that
    another task resolves (all of them) a loop iteration later. Tasks per second."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[int]] = []

    async def one() -> int:
        reply = loop.create_future()
        waiting.append(reply)
        return await reply

    async def resolver() -> None:
        while True:
            await asyncio.sleep(0)
            due = waiting[:]
            waiting.clear()
            for reply in due:
                reply.set_result(1)

    resolving = loop.create_task(resolver())
    await asyncio.gather(*(one() for _ in range(1000)))  # warm up
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    rate = n / (time.perf_counter() - start)
    resolving.cancel()
    return rate


async def local_calls(n: int) -> list[float]:
    async with zmesh.Node("bench", listen=None) as node:
        return await timed_calls(node, await node.start(bench_app.Counter), n)


async def remote_calls(address: str, n: int) -> list[float]:
    async with zmesh.Node("near", cookie="bench") as node:
        await node.connect(address)
        return await timed_calls(node, await node.start("bench_app:Counter", on="far"), n)


async def pipelined_calls(address: str, n: int) -> tuple[float, float]:
    """Calls per second with `n` calls in flight to one remote GenServer: each call its
    own task (`asyncio.gather` over `node.call`), then `n` futures of `node.send_request`
    from this one task."""
    async with zmesh.Node("near", cookie="bench") as node:
        await node.connect(address)
        pid = await node.start("bench_app:Counter", on="far")
        await asyncio.gather(*(node.call(pid, "inc") for _ in range(1000)))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(node.call(pid, "inc", timeout=120) for _ in range(n)))
        tasks = n / (time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.gather(*[node.send_request(pid, "inc", timeout=120) for _ in range(n)])
        return tasks, n / (time.perf_counter() - start)


async def restart_times(n: int) -> list[float]:
    """Kill a supervised named child; time until `whereis(name)` finds the new one."""
    async with zmesh.Node("bench", listen=None) as node:
        await node.start_supervisor(
            [zmesh.child(bench_app.Counter, name="svc")], max_restarts=n + 1, max_seconds=3600
        )
        samples = []
        for _ in range(n):
            old = node.whereis("svc")
            assert old is not None
            t = time.perf_counter()
            node.exit(old, "kill")
            while node.whereis("svc") in (None, old):
                await asyncio.sleep(0)
            samples.append(time.perf_counter() - t)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--remote-calls", type=int, default=5_000)
    parser.add_argument("--in-flight", type=int, default=20_000)
    parser.add_argument("--restarts", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    uv = args.uvloop
    with stages(2 * args.repeat + 1, "calls") as step:
        local, floor = [], []
        for _ in each(range(args.repeat), step, "local"):  # alternated with the floor
            floor.append(run(future_ping_pong(args.calls), uv))
            local.append(run(local_calls(args.calls), uv))
        raw_rt, remote, raw_pipe, pipe, floor_pipe = [], [], [], [], []
        far, address = start_far_node(uv)
        try:
            for _ in each(range(args.repeat), step, "remote"):  # alternated, as in bench_remote
                raw_rt.append(raw("pingpong", args.remote_calls))
                remote.append(run(remote_calls(address, args.remote_calls), uv))
                raw_pipe.append(raw("pipelined", args.in_flight))
                floor_pipe.append(run(gathered_tasks(args.in_flight), uv))
                pipe.append(run(pipelined_calls(address, args.in_flight), uv))
        finally:
            far.terminate()
            far.wait(10)
        restarts = run(restart_times(args.restarts), uv)
        step("restarts")

    def med(runs: list[list[float]]) -> float:
        return statistics.median(statistics.median(r) for r in runs) * 1e6

    def p99(runs: list[list[float]]) -> float:
        return statistics.median(percentile(r, 0.99) for r in runs) * 1e6

    r_med = med(raw_rt)  # type: ignore[arg-type]
    r_pipe = statistics.median(raw_pipe)  # type: ignore[type-var]
    z_pipe = statistics.median(p[0] for p in pipe)  # type: ignore[index]
    z_req = statistics.median(p[1] for p in pipe)  # type: ignore[index]
    loop = "uvloop" if uv else "asyncio"
    local_target = "<= 4 us" if uv else "<= 6 us"
    print(f"GenServer calls and restarts ({loop}; median of {args.repeat} runs)")
    print(f"{'figure':42} {'value':>10} {'raw pyzmq':>10} {'ratio':>7}  target")
    print(f"{'local call median (us)':42} {med(local):10.1f} {'':>10} {'':>7}  {local_target}")
    print(f"{'  floor: future ping-pong of two tasks (us)':42} {med(floor):10.1f}")
    print(f"{'local call p99 (us)':42} {p99(local):10.1f}")
    print(f"{'local calls per second (sequential)':42} {1e6 / med(local):10,.0f}")
    print(
        f"{'remote call median (us)':42} {med(remote):10.1f} {r_med:10.1f} "
        f"{med(remote) / r_med:6.2f}x  <= 1.25x"
    )
    print(f"{'remote call p99 (us)':42} {p99(remote):10.1f} {p99(raw_rt):10.1f}")  # type: ignore[arg-type]
    print(
        f"{f'pipelined remote calls/s ({args.in_flight:,} tasks)':42} {z_pipe:10,.0f} "
        f"{r_pipe:10,.0f} {z_pipe / r_pipe:6.2f}x  >= 100,000/s"
    )
    z_floor = statistics.median(floor_pipe)
    print(f"{'  floor: as many tasks gathered, no I/O (/s)':42} {z_floor:10,.0f}")
    print(
        f"{f'pipelined, send_request ({args.in_flight:,} futures)':42} {z_req:10,.0f} "
        f"{r_pipe:10,.0f} {z_req / r_pipe:6.2f}x  >= 100,000/s"
    )
    rs = sorted(restarts)
    print(
        f"{'killed child back under its name, median (ms)':42} {statistics.median(rs) * 1e3:10.3f}"
    )
    print(
        f"{'killed child back under its name, max (ms)':42} {rs[-1] * 1e3:10.3f}  {'':>18}<= 10 ms"
    )


if __name__ == "__main__":
    main()
