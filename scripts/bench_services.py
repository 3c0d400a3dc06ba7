"""Distributed services (issue 12): failover, placement, redistribution, call latency.

Default NodeConfig settings throughout. Figures are printed, never asserted.

- failover after SIGKILL / SIGSTOP: `zmesh join --load zmesh_test_app` OS processes and
  this process's node; a DistributedCounter service placed on a joined node; the node is
  signalled; the time from the signal to the first `call(name, ...)` answered by another
  node (polled with short call timeouts). The killed node is restarted between rounds.
- placing 1,000 services on 5 nodes (`zmesh.testing.Cluster`, real tcp on loopback),
  spawned concurrently, until every node's `services()` shows all of them with pids;
  then a sixth node joins: the time until every service runs on its new ring owner and
  every node agrees, how many moved against how many the ring says should, and that
  none was lost or duplicated.
- call latency by name to a service and to a plain registered GenServer on the same
  remote node, alternated with a raw pyzmq DEALER/ROUTER ping-pong (bench_remote's
  baseline) in the same run.

    python scripts/bench_services.py [--joined 4] [--rounds 5] [--services 1000]
                                     [--calls 2000] [--repeat 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "tests" / "support"  # zmesh_test_app: DistributedCounter, Counter
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SUPPORT))
# The joined nodes import zmesh_test_app too (tests/support/joined.py passes the env on).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p
)

from bench_remote import percentile, raw  # noqa: E402
from joined import Joined  # noqa: E402
from joined import start_join as joined_start  # noqa: E402

import zmesh  # noqa: E402
from zmesh.testing import Cluster  # noqa: E402
from zmesh.testing import wait_until as testing_wait_until  # noqa: E402

COOKIE = "bench-services"
SERVICE = "zmesh_test_app:DistributedCounter"
PLAIN = "zmesh_test_app:Counter"
ME = "bench"


# -- `zmesh join` OS processes ----------------------------------------------------------------


def start_join(name: str, seeds: list[str], loop: str) -> Joined:
    """`zmesh join NAME --load zmesh_test_app` in another process, seeded as given."""
    flags = [f for seed in seeds for f in ("--seed", seed)]
    return joined_start(name, COOKIE, "--loop", loop, *flags)


def stop_join(joined: Joined) -> None:
    joined.stop()


async def wait_until(predicate: Any, timeout: float, what: str) -> float:
    return await testing_wait_until(predicate, timeout, what=what)


async def mesh_whole(node: zmesh.Node, names: list[str], timeout: float = 20.0) -> None:
    """`node` sees every joined node, and each of them sees all the others and `node`."""
    await wait_until(lambda: node.nodes() == sorted(names), timeout, f"{node.nodes()} != {names}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for name in names:
        want = {*names, node.name} - {name}
        while not want <= set((await node.node_info(name))["nodes"]):
            if loop.time() > deadline:
                raise RuntimeError(f"{name} does not see {sorted(want)}")
            await asyncio.sleep(0.02)


def name_for(prefix: str, members: list[str], *, on: str | None = None) -> str:
    """A service name owned by a joined node (never this process's node), on `on` if
    given, whose next owner once that node is gone is also a joined node."""
    for i in range(100_000):
        name = f"{prefix}-{i}"
        first = zmesh.HashRing(members).key_to_node(name)
        if first == ME or (on is not None and first != on):
            continue
        rest = [m for m in members if m != first]
        if zmesh.HashRing(rest).key_to_node(name) != ME:
            return name
    raise RuntimeError("no service name fits")


# -- failover ---------------------------------------------------------------------------------


async def failover_round(
    node: zmesh.Node, joined: dict[str, Joined], sig: signal.Signals, tag: str, loop_name: str
) -> tuple[float, str, str]:
    """Spawn a counter on a joined node, signal that node, time until the counter answers
    by name from another node; then bring the signalled node back. (seconds, from, to)"""
    members = [ME, *joined]
    name = name_for(f"fo-{tag}", members)
    pid = await node.spawn_service(name, SERVICE, 0)
    victim = pid.node
    for _ in range(3):
        await node.call(name, "increment")
    await asyncio.sleep(0.3)  # steady state: heartbeats flowing
    start = time.perf_counter()
    joined[victim].proc.send_signal(sig)
    while True:
        try:
            where = await node.call(name, "where", timeout=0.1)
            if where != victim:
                break
        except zmesh.ZmeshError:
            pass
        await asyncio.sleep(0.001)
    took = time.perf_counter() - start
    assert await node.call(name, "value") == 0, "a killed node hands nothing over"
    await node.stop_service(name)
    # Bring the node back: kill the (stopped) process, restart it under its name.
    joined[victim].proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(joined[victim].proc.wait, 10)
    seeds = [j.address for n, j in joined.items() if n != victim]
    joined[victim] = await asyncio.to_thread(start_join, victim, seeds, loop_name)
    await mesh_whole(node, list(joined))
    return took, victim, where


# -- latency ----------------------------------------------------------------------------------


async def timed_calls(node: zmesh.Node, name: str, n: int) -> list[float]:
    samples = []
    call = node.call
    for _ in range(n):
        t = time.perf_counter()
        await call(name, "increment")
        samples.append(time.perf_counter() - t)
    return samples


async def latency(
    node: zmesh.Node, joined: dict[str, Joined], calls: int, repeat: int
) -> dict[str, list[list[float]]]:
    """Alternate: calls to a service by name, to a plain registered GenServer by name, on
    the same remote node, and raw pyzmq ping-pong (a subprocess of its own)."""
    target = sorted(joined)[0]
    svc = name_for("lat-svc", [ME, *joined], on=target)
    pid = await node.spawn_service(svc, SERVICE, 0)
    assert pid.node == target
    plain = await node.start(PLAIN, 0, on=target, name="lat-plain")
    assert plain.node == target
    runs: dict[str, list[list[float]]] = {"service": [], "plain": [], "raw": []}
    await timed_calls(node, svc, 200)  # warm both paths
    await timed_calls(node, "lat-plain", 200)
    for _ in range(repeat):
        runs["service"].append(await timed_calls(node, svc, calls))
        runs["plain"].append(await timed_calls(node, "lat-plain", calls))
        runs["raw"].append(await asyncio.to_thread(raw, "pingpong", calls))  # type: ignore[arg-type]
    await node.stop_service(svc)
    node.exit(plain, "kill")
    return runs


async def os_process_part(args: argparse.Namespace) -> dict[str, Any]:
    loop_name = "uvloop" if args.uvloop else "asyncio"
    names = [f"j{i}" for i in range(1, args.joined + 1)]
    joined: dict[str, Joined] = {}
    out: dict[str, Any] = {"kill": [], "stop": []}
    try:
        joined[names[0]] = start_join(names[0], [], loop_name)
        for name in names[1:]:
            joined[name] = start_join(name, [joined[names[0]].address], loop_name)
        # This process's node loads the app too: if the ring ever picks it, it can run a
        # counter (the names below are chosen so it never should).
        async with zmesh.Node(ME, cookie=COOKIE, load=["zmesh_test_app"]) as node:
            await node.connect(joined[names[0]].address)
            await mesh_whole(node, names)
            out["latency"] = await latency(node, joined, args.calls, args.repeat)
            for i in range(args.rounds):
                out["kill"].append(
                    await failover_round(node, joined, signal.SIGKILL, f"k{i}", loop_name)
                )
            for i in range(args.rounds):
                out["stop"].append(
                    await failover_round(node, joined, signal.SIGSTOP, f"s{i}", loop_name)
                )
    finally:
        for j in joined.values():
            stop_join(j)
    return out


# -- placement and redistribution -------------------------------------------------------------


def placement(node: zmesh.Node) -> dict[str, str | None]:
    return {s.name: s.node for s in node.services() if s.pid is not None}


async def scale_part(args: argparse.Namespace) -> dict[str, Any]:
    cfg = zmesh.NodeConfig()
    n = args.services
    names = [f"svc-{i}" for i in range(n)]
    out: dict[str, Any] = {}
    async with Cluster(5, load=["zmesh_test_app"], config=cfg, cookie=COOKIE) as c:
        nodes = list(c)
        loop = asyncio.get_running_loop()
        start = loop.time()
        # Spawned from every node at once, as a cluster of clients would.
        pids = await asyncio.gather(
            *(
                nodes[i % len(nodes)].spawn_service(name, SERVICE, 0, timeout=60)
                for i, name in enumerate(names)
            )
        )
        out["spawned"] = loop.time() - start

        def all_placed(group: list[zmesh.Node]) -> bool:
            return all(
                len(rows := node.services()) == n and all(r.pid is not None for r in rows)
                for node in group
            )

        await wait_until(lambda: all_placed(nodes), 60, "1,000 services placed")
        out["placed"] = loop.time() - start
        before = placement(nodes[0])
        out["counts"] = {node.name: 0 for node in nodes}
        for where in before.values():
            out["counts"][where] += 1
        out["agree_before"] = all(placement(node) == before for node in nodes)
        out["on_owner_before"] = sum(before[s] == nodes[0].ring.key_to_node(s) for s in names)
        assert {p.node for p in pids} <= set(out["counts"])

        # Give every counter a state (1) that a move must carry (handoff/restore).
        await asyncio.gather(*(nodes[0].call(s, "increment", timeout=30) for s in names))
        ring6 = zmesh.HashRing([*c.names, "n6"])
        should_move = {s for s in names if ring6.key_to_node(s) != before[s]}
        # Traffic through the move: one caller increments a sample of the counters that
        # will move, round robin, until redistribution is over. Every increment that was
        # answered must be in the final count (held sends, handoff, restore: none lost).
        sample = sorted(should_move)[: args.traffic]
        answered = dict.fromkeys(sample, 0)
        expected = dict.fromkeys(sample, 1)
        traffic: dict[str, int] = {"calls": 0, "out_of_sequence": 0, "errors": 0}
        stop = asyncio.Event()

        async def keep_calling() -> None:
            while not stop.is_set():
                for s in sample:
                    try:
                        reply = await nodes[0].call(s, "increment", timeout=10)
                    except zmesh.ZmeshError:
                        traffic["errors"] += 1
                        continue
                    traffic["calls"] += 1
                    answered[s] += 1
                    if reply != expected[s] + 1:
                        traffic["out_of_sequence"] += 1
                    expected[s] = reply

        caller = asyncio.ensure_future(keep_calling())
        await asyncio.sleep(0.05)
        start = loop.time()
        async with zmesh.Node(
            "n6", seeds=list(c.addresses.values()), load=["zmesh_test_app"],
            cookie=COOKIE, config=cfg,
        ) as n6:  # fmt: skip
            everyone = [*nodes, n6]

            def settled() -> bool:
                if any(len(node.nodes()) != 5 for node in everyone):
                    return False
                if not all_placed(everyone):
                    return False
                views = [placement(node) for node in everyone]
                if any(view != views[0] for view in views[1:]):
                    return False
                return all(views[0][s] == ring6.key_to_node(s) for s in names)

            await wait_until(settled, 60, "redistributed after the sixth node joined")
            out["redistributed"] = loop.time() - start
            stop.set()
            await caller
            after = placement(n6)
            moved = {s for s in names if after[s] != before[s]}
            out["moved"], out["should_move"] = len(moved), len(should_move)
            out["moved_exactly"] = moved == should_move
            # None lost, none duplicated: each name registered to one live pid, the same
            # on every node, and exactly n live instances across the nodes.
            by_name = {node.name: node for node in everyone}
            registered = [n6.whereis(s) for s in names]
            out["lost"] = sum(
                pid is None or not by_name[pid.node].is_alive(pid) for pid in registered
            )
            out["disagree"] = sum(len({node.whereis(s) for node in everyone}) != 1 for s in names)
            out["instances"] = sum(node.stats().get("services_here", 0) for node in everyone)
            values = dict(
                zip(
                    sorted(moved),
                    await asyncio.gather(*(n6.call(s, "value", timeout=30) for s in sorted(moved))),
                    strict=True,
                )
            )
            # A moved counter must hold 1 (its state before the join) plus every answered
            # increment sent to it during the move.
            out["state_lost"] = sum(values[s] != 1 + answered.get(s, 0) for s in moved)
            out["increments_lost"] = sum(1 + answered[s] - values[s] for s in sample)
            out["traffic"] = dict(traffic, services=len(sample))
            out["moves_counted"] = sum(node.stats().get("service_moves", 0) for node in everyone)
            out["held_dropped"] = sum(
                node.stats().get("service_hold_dropped", 0) for node in everyone
            )
    return out


class _CountWarnings(logging.Handler):
    """Counts this process's zmesh warnings (shown with BENCH_VERBOSE=1): a figure, not
    800 lines of noise between the tables."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()
        if os.environ.get("BENCH_VERBOSE"):
            sys.stderr.write(f"{record.name}: {record.getMessage()}\n")


# -- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joined", type=int, default=4, help="zmesh join OS processes (3-4)")
    parser.add_argument("--rounds", type=int, default=5, help="failover rounds per signal")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000, help="calls per latency run")
    parser.add_argument("--repeat", type=int, default=3, help="latency runs (alternated)")
    parser.add_argument(
        "--traffic", type=int, default=50, help="moving counters called during the join"
    )
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()

    def run(coro: Any) -> Any:
        if args.uvloop:
            import uvloop

            return uvloop.run(coro)
        return asyncio.run(coro)

    warnings = _CountWarnings()
    logging.getLogger("zmesh").addHandler(warnings)
    cfg = zmesh.NodeConfig()
    began = time.perf_counter()
    osp = run(os_process_part(args))
    scale = run(scale_part(args))
    total = time.perf_counter() - began

    rows: list[tuple[str, str, str, str]] = []

    def row(figure: str, value: str, target: str = "", met: bool | None = None) -> None:
        rows.append((figure, value, target, "" if met is None else ("yes" if met else "NO")))

    for key, label, bound in (
        ("kill", "SIGKILL", 0.5),
        ("stop", "SIGSTOP", cfg.down_after + 0.5),
    ):
        times = [t for t, _, _ in osp[key]]
        med, worst = statistics.median(times), max(times)
        row(f"failover after {label}, median (s)", f"{med:.3f}", f"<= {bound:g} s", med <= bound)
        row(f"failover after {label}, max (s)", f"{worst:.3f}", f"<= {bound:g} s", worst <= bound)
        row(
            f"  rounds ({label}): victim -> new node", " ".join(f"{a}->{b}" for _, a, b in osp[key])
        )

    fair = args.services / 5
    dev = max(abs(v - fair) / fair for v in scale["counts"].values())
    row(f"place {args.services:,} services on 5 nodes (s)", f"{scale['placed']:.3f}", "<= 1 s",
        scale["placed"] <= 1.0)  # fmt: skip
    row("  of which spawn_service calls returned (s)", f"{scale['spawned']:.3f}")
    row("  per-node counts", " ".join(f"{k}={v}" for k, v in scale["counts"].items()))
    row("  max deviation from the fair share", f"{dev:.1%}", "<= 20%", dev <= 0.2)
    settled = scale["agree_before"] and scale["on_owner_before"] == args.services
    row("  every node agrees, all on ring owner",
        f"{scale['agree_before']}, {scale['on_owner_before']}/{args.services}",
        "True, all", settled)  # fmt: skip
    row("redistribute after a 6th node joins (s)", f"{scale['redistributed']:.3f}", "<= 2 s",
        scale["redistributed"] <= 2.0)  # fmt: skip
    row("  moved / ring says should move", f"{scale['moved']} / {scale['should_move']}",
        "equal sets", scale["moved_exactly"])  # fmt: skip
    row("  handoffs completed (movers' count, at the end)", str(scale["moves_counted"]))
    t = scale["traffic"]
    row(f"  calls during the move ({t['services']} moving counters)",
        f"{t['calls']} ok, {t['errors']} failed", "0 failed", t["errors"] == 0)  # fmt: skip
    row("  replies out of sequence (not previous + 1)", str(t["out_of_sequence"]), "0",
        t["out_of_sequence"] == 0)  # fmt: skip
    row("  answered increments missing from the count", str(scale["increments_lost"]), "0",
        scale["increments_lost"] == 0)  # fmt: skip
    row("  moved counters whose count is wrong", str(scale["state_lost"]), "0",
        scale["state_lost"] == 0)  # fmt: skip
    row("  lost (name unregistered or dead pid)", str(scale["lost"]), "0", scale["lost"] == 0)
    row("  names the 6 nodes disagree on", str(scale["disagree"]), "0", scale["disagree"] == 0)
    row("  live instances across nodes", str(scale["instances"]), str(args.services),
        scale["instances"] == args.services)  # fmt: skip
    row("  held messages dropped", str(scale["held_dropped"]), "0", scale["held_dropped"] == 0)

    lat = osp["latency"]

    def med(runs: list[list[float]]) -> float:
        return statistics.median(statistics.median(r) for r in runs) * 1e6

    def p99(runs: list[list[float]]) -> float:
        return statistics.median(percentile(r, 0.99) for r in runs) * 1e6

    s, p, r = med(lat["service"]), med(lat["plain"]), med(lat["raw"])
    row("call by service name, median (us)", f"{s:.1f}")
    row("call by registered name, median (us)", f"{p:.1f}")
    row("raw pyzmq DEALER/ROUTER ping-pong, median (us)", f"{r:.1f}")
    row("  service / registered name (median)", f"{s / p:.2f}x", "<= 1.0x", s <= p)
    row("call by service name, p99 (us)", f"{p99(lat['service']):.1f}")
    row("call by registered name, p99 (us)", f"{p99(lat['plain']):.1f}")
    row("raw pyzmq ping-pong, p99 (us)", f"{p99(lat['raw']):.1f}")
    row("  service / registered name (p99)", f"{p99(lat['service']) / p99(lat['plain']):.2f}x",
        "<= 1.0x", p99(lat["service"]) <= p99(lat["plain"]))  # fmt: skip
    row("  service / raw pyzmq (median)", f"{s / r:.2f}x")
    row("  registered name / raw pyzmq (median)", f"{p / r:.2f}x")

    row("zmesh warnings logged in this process", str(warnings.count))
    if warnings.first:
        row(f"  first: {warnings.first[:90]}", "")
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"services ({loop}; defaults: tick {cfg.tick} s, down_after {cfg.down_after} s; "
        f"{args.joined} joined OS processes + this node; {args.rounds} failover rounds per "
        f"signal; latency: median of {args.repeat} alternated runs of {args.calls} calls; "
        f"whole run {total:.1f} s)"
    )
    width = max(len(f) for f, *_ in rows)
    print(f"{'figure':{width}}  {'value':>16}  {'target':>12}  met")
    for figure, value, target, met in rows:
        print(f"{figure:{width}}  {value:>16}  {target:>12}  {met}")


if __name__ == "__main__":
    main()
