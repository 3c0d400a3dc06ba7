"""Distributed data (issue 16): the replicated map and the partitioned store.

Five nodes in this one process (`zmesh.testing.Cluster`: real tcp on loopback, one
event loop shared by all five, default `NodeConfig`). Figures are printed, never
asserted.

- map put -> visible on all 5: n1 puts a key; the time until the last of the other
  four replicas reports it (a `watch` listener on each), one put at a time;
- heal of divergent keys: the cluster is split 2 | 3, each side writes its own
  half of `--divergent` keys, then heals; the time from the first node-up across the
  split to every replica holding every key (and from `heal()`, reconnection included);
- KV at n=3, w=r=2: `get` and `put` latency from n1 against a plain GenServer call
  from n1 to a dict server on n2 (the baseline, alternated in the same run); then
  puts pipelined from all five nodes (`--window` in flight per node) against calls
  pipelined the same way to the one dict server;
- the stop of the five nodes at the end, every store leaving gracefully at once;
- with `--only leave`: `--pipelined` puts, then one node's store closes (a graceful
  leave): the close, the time until the other four are done with it (their ownership
  passes), and how many partition pushes those passes made.

With `--os`, the latency figures again with four `zmesh join` OS processes
(`--app zmesh_test_app:data_app`) and this process's node as the fifth: the map put ->
echoed back by all four (each answers a ping key with a pong key: two replication
hops, so an upper bound of twice the one-way visibility), KV get/put from this node
against a call to a Counter GenServer on a joined node, and puts pipelined from this
node alone.

    python scripts/bench_data.py [--puts 2000] [--divergent 10000] [--ops 2000]
                                 [--pipelined 20000] [--window 100] [--os] [--uvloop]
                                 [--only map|heal|kv|leave]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "tests" / "support"  # joined.py, zmesh_test_app (data_app)
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SUPPORT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p
)

from bench_remote import percentile  # noqa: E402

import zmesh  # noqa: E402
from zmesh.testing import Cluster, wait_until  # noqa: E402


class DictServer(zmesh.GenServer):
    """The baseline: one process holding a dict."""

    async def init(self) -> None:
        self.data: dict[Any, Any] = {}

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        op, key, *value = request
        if op == "put":
            self.data[key] = value[0]
            return True
        return self.data.get(key)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def map_visibility(c: Cluster, puts: int) -> None:
    maps = [await node.replicated_map("bench") for node in c]
    await wait_until(lambda: all(len(m.members()) == 4 for m in maps), 10)
    loop = asyncio.get_running_loop()
    seen: dict[Any, int] = {}
    done: dict[Any, asyncio.Future[float]] = {}

    def listener(change: zmesh.Change) -> None:
        seen[change.key] = seen.get(change.key, 0) + 1
        if seen[change.key] == 4 and change.key in done:
            done[change.key].set_result(loop.time())

    for m in maps[1:]:
        m.watch(listener)
    latencies = []
    for i in range(puts):
        done[i] = loop.create_future()
        start = loop.time()
        maps[0].put(i, {"n": i, "payload": "x" * 32})
        latencies.append(await asyncio.wait_for(done[i], 10) - start)
    print(
        f"map put -> visible on all 5 ({puts} puts, one at a time): "
        f"p50 {ms(statistics.median(latencies))}, p99 {ms(percentile(latencies, 0.99))}, "
        f"max {ms(max(latencies))}"
    )


async def map_heal(c: Cluster, divergent: int) -> None:
    maps = [await node.replicated_map("heal") for node in c]
    await wait_until(lambda: all(len(m.members()) == 4 for m in maps), 10)
    side_a, side_b = ["n1", "n2"], ["n3", "n4", "n5"]
    await c.partition(side_a, side_b)
    await c.settle(timeout=30)
    half = divergent // 2
    for i in range(half):
        maps[0].put(("a", i), i)
        maps[2].put(("b", i), i)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let heartbeats through, as an application would
    await wait_until(lambda: len(maps[1]) == half and len(maps[4]) == half, 30)
    loop = asyncio.get_running_loop()
    ups: list[float] = []
    for name in side_a:
        c[name].subscribe_nodes(
            lambda event, peer: ups.append(loop.time()) if event == "up" else None
        )
    start = loop.time()
    await c.heal()
    while not all(len(m) == 2 * half for m in maps):
        if loop.time() - start > 60:
            raise TimeoutError("no convergence within 60 s of the heal")
        await asyncio.sleep(0.001)
    end = loop.time()
    await c.settle(timeout=30)
    first = maps[0].to_dict()
    assert all(m.to_dict() == first for m in maps[1:]), "replicas differ after the heal"
    cross = len(side_a) * len(side_b)
    print(
        f"heal of {2 * half} divergent keys (2 | 3 split, {cross} pairs reconnect): "
        f"first cross-side node-up -> every replica converged {end - ups[0]:.3f} s, "
        f"last node-up before convergence -> converged "
        f"{end - max(u for u in ups if u <= end):.3f} s "
        f"(heal() -> converged {end - start:.3f} s, reconnection included)"
    )


async def kv_latency(c: Cluster, ops: int) -> None:
    stores = [await node.kv_open("bench", n=3) for node in c]
    await wait_until(lambda: all(len(s.members()) == 5 for s in stores), 10)
    server = await c["n2"].start(DictServer)
    n1, kv = c["n1"], stores[0]
    gets, puts, calls, call_puts = [], [], [], []
    loop = asyncio.get_running_loop()
    for i in range(ops):
        key = f"key{i % 500}"
        t0 = loop.time()
        await kv.put(key, i, w=2)
        t1 = loop.time()
        await n1.call(server, ("put", key, i))
        t2 = loop.time()
        assert await kv.get(key, r=2) == i
        t3 = loop.time()
        assert await n1.call(server, ("get", key)) == i
        t4 = loop.time()
        puts.append(t1 - t0)
        call_puts.append(t2 - t1)
        gets.append(t3 - t2)
        calls.append(t4 - t3)
    get_m, call_m = statistics.median(gets), statistics.median(calls)
    put_m, call_put_m = statistics.median(puts), statistics.median(call_puts)
    print(
        f"KV n=3 get r=2 from n1 ({ops} ops): median {ms(get_m)}, p99 "
        f"{ms(percentile(gets, 0.99))}; GenServer call n1 -> dict on n2: median "
        f"{ms(call_m)}; ratio {get_m / call_m:.2f}x"
    )
    print(
        f"KV n=3 put w=2 from n1: median {ms(put_m)}, p99 {ms(percentile(puts, 0.99))}; "
        f"GenServer put call: median {ms(call_put_m)}; ratio {put_m / call_put_m:.2f}x"
    )
    await pipelined(c, stores, server)


async def pipelined(c: Cluster, stores: list[zmesh.KV], server: zmesh.Pid) -> None:
    total, window = ARGS.pipelined, ARGS.window
    per_node = total // len(stores)
    loop = asyncio.get_running_loop()

    async def drive(make: Any) -> float:
        counter = itertools.count()

        async def worker(node_index: int) -> None:
            while (i := next(counter)) < total:
                await make(node_index, i)

        start = loop.time()
        await asyncio.gather(*(worker(i % len(stores)) for i in range(window * len(stores))))
        return total / (loop.time() - start)

    async def kv_put(node_index: int, i: int) -> None:
        await stores[node_index].put(f"p{i}", i, w=2)

    async def call_put(node_index: int, i: int) -> None:
        await list(c)[node_index].call(server, ("put", f"p{i}", i))

    kv_rate = await drive(kv_put)
    call_rate = await drive(call_put)
    print(
        f"KV puts pipelined from 5 nodes ({total}, {window} in flight per node, "
        f"~{per_node} per node): {kv_rate:,.0f} puts/s; GenServer put calls to one dict "
        f"server, same pipelining: {call_rate:,.0f} calls/s; ratio {kv_rate / call_rate:.2f}x"
    )


async def os_processes() -> None:
    from joined import start_join

    cookie = "bench-data"
    app = ("--app", "zmesh_test_app:data_app")
    joined = [start_join("j1", cookie, *app)]
    joined += [start_join(f"j{i}", cookie, "--seed", joined[0].address, *app) for i in (2, 3, 4)]
    try:
        async with zmesh.Node("bench", listen="tcp://127.0.0.1:0", cookie=cookie) as node:
            await node.connect(joined[0].address)
            m = await node.replicated_map("shared")
            kv = await node.kv_open("bench", n=3)
            names = [j.name for j in joined]
            await wait_until(lambda: len(m.members()) == 4 and len(kv.members()) == 5, 20)
            loop = asyncio.get_running_loop()
            waiting: dict[int, tuple[asyncio.Future[float], set[str]]] = {}

            def listener(change: zmesh.Change) -> None:
                key = change.key
                if type(key) is tuple and key[0] == "pong" and key[2] in waiting:
                    fut, left = waiting[key[2]]
                    left.discard(key[1])
                    if not left and not fut.done():
                        fut.set_result(loop.time())

            m.watch(listener)
            rtts = []
            for i in range(ARGS.puts):
                fut = loop.create_future()
                waiting[i] = (fut, set(names))
                start = loop.time()
                m.put(("ping", i), i)
                rtts.append(await asyncio.wait_for(fut, 10) - start)
                del waiting[i]
            print(
                f"[os] map put -> echoed back by all 4 processes ({ARGS.puts} puts): p50 "
                f"{ms(statistics.median(rtts))}, p99 {ms(percentile(rtts, 0.99))}"
            )
            counter = await node.start("zmesh_test_app:Counter", 0, on="j2")
            gets, puts, calls = [], [], []
            for i in range(ARGS.ops):
                key = f"key{i % 500}"
                t0 = loop.time()
                await kv.put(key, i, w=2)
                t1 = loop.time()
                assert await kv.get(key, r=2) == i
                t2 = loop.time()
                await node.call(counter, "get")
                t3 = loop.time()
                puts.append(t1 - t0)
                gets.append(t2 - t1)
                calls.append(t3 - t2)
            get_m, put_m, call_m = (statistics.median(x) for x in (gets, puts, calls))
            print(
                f"[os] KV n=3 get r=2 from this node: median {ms(get_m)}, p99 "
                f"{ms(percentile(gets, 0.99))}; put w=2: median {ms(put_m)}; GenServer call "
                f"to j2: median {ms(call_m)}; get/call {get_m / call_m:.2f}x, "
                f"put/call {put_m / call_m:.2f}x"
            )
            total, window = ARGS.pipelined, ARGS.window * 5
            ids = itertools.count()

            async def worker() -> None:
                while (i := next(ids)) < total:
                    await kv.put(f"p{i}", i, w=2)

            start = loop.time()
            await asyncio.gather(*(worker() for _ in range(window)))
            rate = total / (loop.time() - start)
            ids = itertools.count()

            async def caller() -> None:
                while next(ids) < total:
                    await node.call(counter, "increment")

            start = loop.time()
            await asyncio.gather(*(caller() for _ in range(window)))
            call_rate = total / (loop.time() - start)
            print(
                f"[os] KV puts pipelined from this node ({total}, {window} in flight): "
                f"{rate:,.0f} puts/s; GenServer calls to j2, same: {call_rate:,.0f} calls/s"
            )
    finally:
        for j in joined:
            j.stop()


async def main() -> None:
    if ARGS.os:
        await os_processes()
        return
    # Default failure detection (down after 2 s): the test config's 0.6 s would count a
    # loop busy merging 10,000 keys for five nodes at once as a dead peer.
    c = Cluster(5, config=zmesh.NodeConfig())
    await c.__aenter__()
    try:
        if ARGS.only in (None, "map"):
            await map_visibility(c, ARGS.puts)
        if ARGS.only in (None, "heal"):
            await map_heal(c, ARGS.divergent)
        if ARGS.only in (None, "kv"):
            await kv_latency(c, ARGS.ops)
        if ARGS.only == "leave":
            await kv_leave(c)
    finally:
        keys = sum(len(t) for node in c for s in node_stores(node) for t in s.vnodes.data.values())
        loop = asyncio.get_running_loop()
        start = loop.time()
        await c.close()
        print(
            f"stop of the 5 nodes (every store left gracefully, {keys} KV replicas held): "
            f"{loop.time() - start:.3f} s"
        )


async def kv_leave(c: Cluster) -> None:
    stores = [await node.kv_open("leave", n=3) for node in c]
    await wait_until(lambda: all(len(s.members()) == 5 for s in stores), 10)
    total, ids = ARGS.pipelined, itertools.count()

    async def worker(store: zmesh.KV) -> None:
        while (i := next(ids)) < total:
            await store.put(f"p{i}", i, w=2)

    await asyncio.gather(*(worker(stores[i % 5]) for i in range(ARGS.window * 5)))
    *rest, leaver = stores
    loop = asyncio.get_running_loop()
    start = loop.time()
    await leaver.close()
    closed = loop.time()
    await wait_until(lambda: all(len(s.members()) == 4 for s in rest), 10)
    while any(s.vnodes.tasks for s in rest):
        await asyncio.sleep(0.001)
    settled = loop.time()
    pushes = sum(s.vnodes.counters["handoffs_out"] for s in rest)
    print(
        f"KV leave of 1 of 5 nodes ({total} keys): close {closed - start:.3f} s, the other "
        f"four done {settled - start:.3f} s, their partition pushes {pushes}"
    )


def node_stores(node: zmesh.Node) -> list[zmesh.KV]:
    router = getattr(node, "_data_kv", None)
    return list(router.stores.values()) if router is not None else []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--divergent", type=int, default=10000)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--pipelined", type=int, default=20000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--os", action="store_true", help="zmesh join processes")
    parser.add_argument("--only", choices=["map", "heal", "kv", "leave"], help="one part alone")
    parser.add_argument("--uvloop", action="store_true")
    ARGS = parser.parse_args()
    where = "4 zmesh join processes + this one" if ARGS.os else "5 nodes in one process"
    print(f"distributed data, {where}, loopback tcp ({'uvloop' if ARGS.uvloop else 'asyncio'})")
    if ARGS.uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
