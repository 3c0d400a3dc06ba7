"""Remote messaging between two OS processes, beside raw pyzmq measured in the same run.

Baseline: a DEALER->ROUTER pair, msgpack, the same ~80-byte message, a plain blocking
per-message send/recv loop (one-way throughput, and ping-pong latency). zmesh: a node in
this process and a `zmesh join` node in another; one-way is node.send to a remote
process, the round trip a send and a reply between two processes.

    python scripts/bench_remote.py [--messages 200000] [--rounds 5000] [--repeat 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq
from progress import each, stages

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MESSAGE = (b"pid", 1, "x" * 64)

# -- raw pyzmq ----------------------------------------------------------------------------

RAW_SERVER = r"""
import sys, zmq, msgpack
mode, n = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.setsockopt(zmq.RCVHWM, 0)
s.setsockopt(zmq.SNDHWM, 0)  # a ROUTER drops what is over its HWM (pipelined replies)
port = s.bind_to_random_port("tcp://127.0.0.1"); print(port, flush=True)
if mode == "oneway":
    for i in range(n):
        ident, data = s.recv_multipart(); msgpack.unpackb(data)
    s.send_multipart([ident, b"done"])
else:
    for i in range(n):
        ident, data = s.recv_multipart()
        s.send_multipart([ident, msgpack.packb(msgpack.unpackb(data))])
s.close(); ctx.term()
"""


def raw(mode: str, n: int) -> list[float] | float:
    server = subprocess.Popen(
        [sys.executable, "-c", RAW_SERVER, "pingpong" if mode == "pipelined" else mode, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        if mode == "oneway":
            sock.send(msgpack.packb(MESSAGE))
            start = time.perf_counter()
            for i in range(1, n):
                sock.send(msgpack.packb((b"pid", i, "x" * 64)))
            sock.recv()
            return (n - 1) / (time.perf_counter() - start)
        if mode == "pipelined":  # the echo server, with every request sent before a reply is read
            start = time.perf_counter()
            for i in range(n):
                sock.send(msgpack.packb((b"pid", i, "x" * 64)))
            for _ in range(n):
                msgpack.unpackb(sock.recv())
            return n / (time.perf_counter() - start)
        samples = []
        for i in range(n):
            t = time.perf_counter()
            sock.send(msgpack.packb((b"pid", i, "x" * 64)))
            msgpack.unpackb(sock.recv())
            samples.append(time.perf_counter() - t)
        return samples
    finally:
        sock.close(0)
        ctx.term()
        server.wait(10)


# -- zmesh ----------------------------------------------------------------------------------


def start_far_node(
    use_uvloop: bool, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    """`zmesh join far` in another process (with `extra` flags); the process, its address."""
    env = dict(os.environ, ZMESH_COOKIE="bench", PYTHONPATH=str(HERE))
    cmd = [sys.executable, "-m", "zmesh", "join", "far", "--listen", "tcp://127.0.0.1:0",
           "--load", "bench_app", "--loop", "uvloop" if use_uvloop else "asyncio",
           *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split()[-1]


async def zmesh_one_way(address: str, n: int, curve: Any = None) -> float:
    import zmesh

    # "far@" pins the far node's CURVE key when `curve` is given; plain nodes ignore it.
    async with zmesh.Node("near", cookie="bench", curve=curve) as node:
        await node.connect(f"far@{address}")
        async with node.process() as me:
            sink = await node.spawn_remote("far", "bench_app:sink", me.pid, n)
            send = node.send
            start = time.perf_counter()
            for i in range(n):
                send(sink, (b"pid", i, "x" * 64))
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let the transport flush while we keep producing
            assert await me.receive(timeout=120) == ("done", n)
            return n / (time.perf_counter() - start)


async def zmesh_round_trip(address: str, n: int, curve: Any = None) -> list[float]:
    import zmesh

    async with zmesh.Node("near", cookie="bench", curve=curve) as node:
        await node.connect(f"far@{address}")
        async with node.process() as me:
            echo = await node.spawn_remote("far", "bench_app:echo")
            samples = []
            for i in range(n):
                t = time.perf_counter()
                node.send(echo, (me.pid, (b"pid", i, "x" * 64)))
                await me.receive()
                samples.append(time.perf_counter() - t)
            return samples


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(coro, use_uvloop: bool):  # type: ignore[no-untyped-def]
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    raw_ow, ours_ow, raw_rt, ours_rt = [], [], [], []
    far, address = start_far_node(args.uvloop)
    try:
        with stages(args.repeat, "remote") as step:
            for _ in each(range(args.repeat), step, "round"):  # alternate: drift hits both alike
                raw_ow.append(raw("oneway", args.messages))
                ours_ow.append(run(zmesh_one_way(address, args.messages), args.uvloop))
                raw_rt.append(raw("pingpong", args.rounds))
                ours_rt.append(run(zmesh_round_trip(address, args.rounds), args.uvloop))
    finally:
        far.terminate()
        far.wait(10)
    r_ow, z_ow = statistics.median(raw_ow), statistics.median(ours_ow)  # type: ignore[type-var]
    r_rt = statistics.median(statistics.median(s) for s in raw_rt) * 1e6  # type: ignore[arg-type]
    z_rt = statistics.median(statistics.median(s) for s in ours_rt) * 1e6
    r_p99 = statistics.median(percentile(s, 0.99) for s in raw_rt) * 1e6  # type: ignore[arg-type]
    z_p99 = statistics.median(percentile(s, 0.99) for s in ours_rt) * 1e6
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"remote, two OS processes on loopback ({loop}; median of {args.repeat} rounds)")
    print(f"{'figure':38} {'zmesh':>12} {'raw pyzmq':>12} {'ratio':>8}  target")
    print(f"{'one-way (msg/s)':38} {z_ow:12,.0f} {r_ow:12,.0f} {z_ow / r_ow:7.2f}x  >= 1.3x")
    print(f"{'round trip median (us)':38} {z_rt:12.1f} {r_rt:12.1f} {z_rt / r_rt:7.2f}x  <= 1.25x")
    print(f"{'round trip p99 (us)':38} {z_p99:12.1f} {r_p99:12.1f} {z_p99 / r_p99:7.2f}x")


if __name__ == "__main__":
    main()
