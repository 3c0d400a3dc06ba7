"""Local process benchmarks: spawn rate, idle memory, one-way throughput, ping-pong latency.

Each figure is printed beside the bare-asyncio floor measured in the same run (a task
blocked on a deque+Future mailbox), so the ratio says what zmesh's runtime costs.

    python scripts/bench_local.py [--processes 1000000] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from progress import each, stages

import zmesh

HERE = Path(__file__).resolve().parent

MESSAGE = (b"pid", 1, "x" * 64)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def idle(proc: zmesh.Process) -> None:
    await proc.receive()


async def bench_spawn(n: int) -> float:
    async with zmesh.Node("bench", listen=None) as node:
        start = time.perf_counter()
        for _ in range(n):
            node.spawn(idle)
        await asyncio.sleep(0)  # every process runs until it blocks in receive
        return n / (time.perf_counter() - start)


async def bench_memory(n: int) -> tuple[float, float]:
    gc.collect()
    before = rss_bytes()
    async with zmesh.Node("bench", listen=None) as node:
        start = time.perf_counter()
        for _ in range(n):
            node.spawn(idle)
        await asyncio.sleep(0)
        rate = n / (time.perf_counter() - start)
        gc.collect()
        per_process = (rss_bytes() - before) / n
        assert len(node.processes()) == n
    return per_process, rate


async def bench_one_way(n: int) -> float:
    async with zmesh.Node("bench", listen=None) as node, node.process() as me:
        start = time.perf_counter()
        send = node.send
        pid = me.pid
        for _ in range(n):
            send(pid, MESSAGE)
        receive = me.receive
        for _ in range(n):
            await receive()
        return n / (time.perf_counter() - start)


async def ponger(proc: zmesh.Process) -> None:
    receive, send = proc.receive, proc.node.send
    while True:
        sender, msg = await receive()
        send(sender, msg)


async def bench_ping_pong(n: int) -> list[float]:
    async with zmesh.Node("bench", listen=None) as node:
        pong = node.spawn(ponger)
        async with node.process() as me:
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                node.send(pong, (me.pid, MESSAGE))
                await me.receive()
                samples.append(time.perf_counter() - t)
            return samples


# -- the bare-asyncio floor -----------------------------------------------------------


class BareMailbox:
    __slots__ = ("queue", "waiter")

    def __init__(self) -> None:
        self.queue: deque[object] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, msg: object) -> None:
        self.queue.append(msg)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> object:
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.queue.popleft()


async def bare_spawn(n: int) -> float:
    """Tasks blocked on a deque+Future mailbox, with the GC thresholds a node sets."""
    gc.set_threshold(*(zmesh.NodeConfig().gc_thresholds or gc.get_threshold()))

    async def task(box: BareMailbox) -> None:
        await box.get()

    loop = asyncio.get_running_loop()
    keep = []
    start = time.perf_counter()
    for _ in range(n):
        box = BareMailbox()
        keep.append((box, loop.create_task(task(box))))
    await asyncio.sleep(0)
    rate = n / (time.perf_counter() - start)
    for _, t in keep:
        t.cancel()
    await asyncio.gather(*(t for _, t in keep), return_exceptions=True)
    return rate


async def bare_one_way(n: int) -> float:
    box = BareMailbox()
    start = time.perf_counter()
    for _ in range(n):
        box.put(MESSAGE)
    for _ in range(n):
        await box.get()
    return n / (time.perf_counter() - start)


async def bare_ping_pong(n: int) -> list[float]:
    a, b = BareMailbox(), BareMailbox()

    async def pong() -> None:
        while True:
            a.put(await b.get())

    task = asyncio.get_running_loop().create_task(pong())
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        b.put(MESSAGE)
        await a.get()
        samples.append(time.perf_counter() - t)
    task.cancel()
    return samples


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(coro_fn, *args, use_uvloop: bool = False):  # type: ignore[no-untyped-def]
    if use_uvloop:
        import uvloop

        return uvloop.run(coro_fn(*args))
    return asyncio.run(coro_fn(*args))


def fresh(fn: str, n: int, use_uvloop: bool) -> list[float]:
    """Run benchmark `fn(n)` in a new interpreter: a heap left by an earlier run (millions
    of dead tasks) slows the collector, so each repetition starts clean."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_local as b; "
        f"r = b.run(b.{fn}, {n}, use_uvloop={use_uvloop}); "
        "print(*(r if isinstance(r, tuple) else (r,)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    uv = args.uvloop
    reps = range(args.repeat)

    with stages(4 * args.repeat + 3, "local") as step:
        spawn = statistics.median(
            fresh("bench_spawn", 200_000, uv)[0] for _ in each(reps, step, "spawn")
        )
        bare_sp = statistics.median(
            fresh("bare_spawn", 200_000, uv)[0] for _ in each(reps, step, "bare spawn")
        )
        per_proc, spawn_1m = fresh("bench_memory", args.processes, uv)
        step("memory")
        one_way = statistics.median(
            run(bench_one_way, args.messages, use_uvloop=uv) for _ in each(reps, step, "one-way")
        )
        bare_ow = statistics.median(
            run(bare_one_way, args.messages, use_uvloop=uv)
            for _ in each(reps, step, "bare one-way")
        )
        pp = run(bench_ping_pong, args.rounds, use_uvloop=uv)
        step("ping-pong")
        bare_pp = run(bare_ping_pong, args.rounds, use_uvloop=uv)
        step("bare ping-pong")

    loop_name = "uvloop" if uv else "asyncio"
    print(f"zmesh local benchmarks ({loop_name}, Python {sys.version.split()[0]})")
    print(f"{'figure':44} {'zmesh':>14} {'bare asyncio':>14} {'ratio':>7}  target")
    rows = [
        ("spawn, 200k processes (per s)", spawn, bare_sp, ">= 200,000/s"),
        (f"spawn, {args.processes:,} processes (per s)", spawn_1m, None, ""),
        (f"RSS per idle process at {args.processes:,} (B)", per_proc, None, "<= 2,147 B"),
        ("one-way burst then drain (msg/s)", one_way, bare_ow, ">= 1,000,000/s"),
        ("ping-pong round trip median (us)", statistics.median(pp) * 1e6,
         statistics.median(bare_pp) * 1e6, "<= 10 us"),
        ("ping-pong round trip p99 (us)", percentile(pp, 0.99) * 1e6,
         percentile(bare_pp, 0.99) * 1e6, ""),
    ]  # fmt: skip
    for label, ours, bare, target in rows:
        ratio = f"{ours / bare:6.2f}x" if bare else ""
        bare_s = f"{bare:14,.1f}" if bare else " " * 14
        print(f"{label:44} {ours:14,.1f} {bare_s} {ratio:>7}  {target}")


if __name__ == "__main__":
    main()
