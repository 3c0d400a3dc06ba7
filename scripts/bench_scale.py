"""Scale: how the cost of a cluster of `zmesh join` OS processes on one machine grows
with its size N. Default NodeConfig settings; figures are printed, never asserted.

For each N:
- launch: node 0 starts, then N-1 nodes are launched at once, each seeded with node 0;
  "all up" is when every process has printed its address, "full mesh" when every node
  has logged N-1 peers up (read from each node's own log, so no extra node is involved).
- idle CPU: after `--settle` seconds, the CPU time (every thread, the scheduler's
  nanosecond count from /proc/PID/task/*/schedstat) that all N processes used over
  `--window` seconds, as a percentage of one core; and each process's resident memory
  (VmRSS). The raw baseline in the same run is a full mesh of N plain pyzmq processes
  (a ROUTER each and a DEALER to every other, with ZeroMQ heartbeats at the same
  interval and timeout as zmesh's defaults, blocked in a receive): the floor of
  keeping N nodes connected and watched.
- wake-up cost, printed first: the CPU time a bare asyncio process that only sleeps one
  `tick` at a time uses per wake-up. On a VM, waking an idle vCPU costs milliseconds of
  the woken process's time, so an idle figure counts wake-ups more than work.
- registry: this process's node joins the cluster, registers a name and polls every
  node's `info()` (concurrently) until each lists it: register -> visible everywhere.
- failover: a DistributedCounter service placed on a joined node, that node SIGKILLed,
  then the time until the service answers by name from another node.

    python scripts/bench_scale.py [--sizes 4,16,32,64] [--window 10] [--settle 3]
                                  [--rounds 3] [--no-registry] [--no-failover] [--plain]

The nodes run from the interpreter that runs this script, so its install is theirs: an
editable install (`pip install -e .`) adds its import hook to every node's memory (about
1 MiB in a 16-node cluster); `--plain` leaves out the test app the failover needs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "tests" / "support"  # joined.py; zmesh_test_app: DistributedCounter
sys.path.insert(0, str(SUPPORT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p
)

from joined import Joined, start_join  # noqa: E402

import zmesh  # noqa: E402

COOKIE = "bench-scale"
SERVICE = "zmesh_test_app:DistributedCounter"
ME = "bench"
UP = re.compile(r"node (\S+) up \(")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
# The raw baseline: one node of a plain pyzmq full mesh with zmesh's ZMTP heartbeats.
RAW_NODE = """
import sys, zmq
ivl, timeout, ttl = (int(a) for a in sys.argv[1:4])
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.bind("tcp://127.0.0.1:*")
print(router.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
dealers = []
for address in sys.stdin.readline().split():
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
    dealer.setsockopt(zmq.HEARTBEAT_TTL, ttl)
    dealer.connect(address)
    dealers.append(dealer)
router.recv()
"""


# What one wake-up costs here: a bare asyncio loop that only sleeps a tick at a time.
BARE_TIMER = """
import asyncio, sys
async def main():
    while True:
        await asyncio.sleep(float(sys.argv[1]))
print("up", flush=True)
asyncio.run(main())
"""


# -- OS process figures -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`, all its threads, seconds: the scheduler's own count in
    nanoseconds (/proc/PID/task/TID/schedstat), not /proc/PID/stat's utime + stime in
    10 ms clock ticks, which rounds an idle node's 10 s to 0, 10 or 20 ms."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return total / 1e9


def tick_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/PID/stat (10 ms clock ticks): the figure `top` and
    `ps` show, printed beside the scheduler's for comparison with older runs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def idle_cpu(pids: list[int], window: float) -> tuple[float, float]:
    """Percent of one core that `pids` used together over `window` seconds: by the
    scheduler's count, and by /proc/PID/stat's clock ticks."""
    before = sum(cpu_seconds(p) for p in pids), sum(tick_cpu_seconds(p) for p in pids)
    start = time.perf_counter()
    time.sleep(window)
    elapsed = time.perf_counter() - start
    after = sum(cpu_seconds(p) for p in pids), sum(tick_cpu_seconds(p) for p in pids)
    return 100.0 * (after[0] - before[0]) / elapsed, 100.0 * (after[1] - before[1]) / elapsed


def raw_idle(n: int, settle: float, window: float) -> tuple[float, float]:
    """Idle CPU (percent of one core, as `idle_cpu`) of a raw pyzmq full mesh of `n`
    processes."""
    cfg = zmesh.NodeConfig()
    ivl, down = int(cfg.tick * 1000), int(cfg.down_after * 1000)
    argv = [sys.executable, "-c", RAW_NODE, str(ivl), str(down - ivl), str(down + ivl)]
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        addresses = []
        for p in procs:
            assert p.stdout is not None
            addresses.append(p.stdout.readline().strip())
        for i, p in enumerate(procs):
            assert p.stdin is not None
            p.stdin.write(" ".join(a for j, a in enumerate(addresses) if j != i) + "\n")
            p.stdin.flush()
        time.sleep(settle)
        return idle_cpu([p.pid for p in procs], window)
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def wake_cost(period: float, settle: float, window: float) -> float:
    """Milliseconds of CPU one timer wake-up of an otherwise idle asyncio process costs
    on this machine (on a VM, waking an idle vCPU is most of it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_TIMER, str(period)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(settle)
        return idle_cpu([proc.pid], window)[0] / 100 * period * 1000
    finally:
        proc.kill()
        proc.wait(10)


# -- launching a cluster ----------------------------------------------------------------------


def peers_up(joined: Joined) -> set[str]:
    return {m.group(1) for line in list(joined.lines) for m in UP.finditer(line)}


def launch(n: int, timeout: float, load: bool = True) -> tuple[list[Joined], float, float]:
    """N `zmesh join` nodes seeded with the first (each loading the test app that holds
    the failover's DistributedCounter if `load`); (nodes, seconds until all printed their
    address, seconds until every node logged all the others up), both from the launch."""
    first = start_join("n0", COOKIE, load=load)
    nodes = [first]
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
            rest = pool.map(
                lambda i: start_join(
                    f"n{i}", COOKIE, "--seed", first.address, timeout=timeout, load=load
                ),
                range(1, n),
            )
            nodes.extend(rest)
        all_up = time.perf_counter() - start
        names = {j.name for j in nodes}
        deadline = start + timeout
        while any(peers_up(j) < names - {j.name} for j in nodes):
            if time.perf_counter() > deadline:
                missing = {j.name: sorted(names - {j.name} - peers_up(j)) for j in nodes}
                raise RuntimeError(f"no full mesh after {timeout} s: {missing}")
            time.sleep(0.01)
        return nodes, all_up, time.perf_counter() - start
    except BaseException:
        stop_all(nodes)
        raise


def stop_all(nodes: list[Joined]) -> None:
    for j in nodes:
        if j.proc.poll() is None:
            j.proc.send_signal(signal.SIGKILL)
    for j in nodes:
        j.proc.wait(10)


# -- figures from a node of our own in the cluster ----------------------------------------------


async def register_visible(node: zmesh.Node, names: list[str], tag: str) -> float:
    """Register a name here; seconds until every joined node's `info()` lists it."""
    loop = asyncio.get_running_loop()
    async with node.process() as me:
        start = loop.time()
        assert await node.register(tag, me.pid)
        waiting = set(names)
        while waiting:
            infos = await asyncio.gather(*(node.node_info(n, timeout=5.0) for n in waiting))
            waiting -= {i["name"] for i in infos if tag in i["registered"]}
        took = loop.time() - start
        await node.unregister(tag)
        return took


def service_name(members: list[str], tag: str) -> str:
    """A service name whose owner is a joined node, and whose next owner is one too."""
    for i in range(100_000):
        name = f"{tag}-{i}"
        first = zmesh.HashRing(members).key_to_node(name)
        rest = [m for m in members if m != first]
        if first != ME and zmesh.HashRing(rest).key_to_node(name) != ME:
            return name
    raise RuntimeError("no service name fits")


async def failover(node: zmesh.Node, nodes: dict[str, Joined], tag: str) -> float:
    """SIGKILL the node running a fresh service; seconds until it answers from another."""
    name = service_name([ME, *nodes], tag)
    pid = await node.spawn_service(name, SERVICE, 0)
    victim = pid.node
    await node.call(name, "increment")
    start = time.perf_counter()
    nodes.pop(victim).proc.send_signal(signal.SIGKILL)
    while True:
        try:
            if await node.call(name, "where", timeout=0.1) != victim:
                break
        except zmesh.ZmeshError:
            pass
        await asyncio.sleep(0.001)
    took = time.perf_counter() - start
    await node.stop_service(name)
    return took


async def in_cluster(nodes: list[Joined], args: argparse.Namespace) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"registry": [], "failover": []}
    by_name = {j.name: j for j in nodes}
    async with zmesh.Node(ME, cookie=COOKIE, load=["zmesh_test_app"]) as node:
        await node.connect(nodes[0].address)
        names = sorted(by_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while node.nodes() != names:
            if loop.time() > deadline:
                raise RuntimeError(f"{ME} sees {node.nodes()}, not {names}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        if args.registry:
            for i in range(args.rounds):
                out["registry"].append(await register_visible(node, names, f"reg-{i}"))
        if args.failover:
            for i in range(min(args.rounds, len(by_name) - 2)):
                out["failover"].append(await failover(node, by_name, f"fo-{i}"))
    return out


# -- the run ----------------------------------------------------------------------------------


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    nodes, all_up, mesh = launch(n, args.timeout, load=not args.plain)
    try:
        time.sleep(args.settle)
        pids = [j.proc.pid for j in nodes]
        cpu = idle_cpu(pids, args.window)
        rss = [rss_mib(p) for p in pids]
        extra = asyncio.run(in_cluster(nodes, args))
    finally:
        stop_all(nodes)
    raw = raw_idle(n, args.settle, args.window)
    return {"all_up": all_up, "mesh": mesh, "cpu": cpu, "raw": raw, "rss": rss, **extra}


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{1000 * statistics.median(values):.0f} ({1000 * max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="4,16,32,64", help="cluster sizes, comma-separated")
    parser.add_argument("--window", type=float, default=10.0, help="idle CPU window, seconds")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after full mesh")
    parser.add_argument("--rounds", type=int, default=3, help="registry and failover rounds")
    parser.add_argument("--timeout", type=float, default=120.0, help="launch bound, seconds")
    parser.add_argument("--no-registry", dest="registry", action="store_false")
    parser.add_argument("--no-failover", dest="failover", action="store_false")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain `zmesh join` nodes, no test app loaded (implies --no-failover)",
    )
    args = parser.parse_args()
    if args.plain:
        args.failover = False
    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = zmesh.NodeConfig()
    print(f"scale, defaults: tick {cfg.tick} s, down after {cfg.down_after} s; "
          f"{os.cpu_count()} cores; idle window {args.window} s after {args.settle} s")  # fmt: skip
    print(
        f"one timer wake-up of a bare asyncio process: "
        f"{wake_cost(cfg.tick, args.settle, args.window):.2f} ms of CPU (one per {cfg.tick} s)",
        flush=True,
    )
    print(
        f"{'N':>3} {'all up':>8} {'mesh':>8} {'idle CPU':>9} {'raw':>6} {'ratio':>6} "
        f"{'per node':>9} {'(ticks':>7} {'raw)':>6} {'RSS MiB':>8} {'register->seen ms':>18} "
        f"{'failover ms':>12}"
    )
    for n in sizes:
        r = measure(n, args)
        (cpu, cpu_ticks), (raw, raw_ticks) = r["cpu"], r["raw"]
        ratio = f"{cpu / raw:5.1f}x" if raw > 0 else "    -"
        print(
            f"{n:>3} {r['all_up']:7.1f}s {r['mesh']:7.1f}s {cpu:8.1f}% {raw:5.1f}% "
            f"{ratio} {cpu / n:8.2f}% {cpu_ticks:6.1f}% {raw_ticks:5.1f}% "
            f"{statistics.median(r['rss']):8.1f} {ms(r['registry']):>18} {ms(r['failover']):>12}",
            flush=True,
        )
    print(
        "median (max) over rounds; idle CPU in % of one core, summed over the N processes, "
        "by the scheduler's count (ticks: by /proc/PID/stat's clock ticks, as top shows); "
        "raw: a plain pyzmq full mesh with the same ZeroMQ heartbeats"
    )


if __name__ == "__main__":
    main()
