"""Discovery: time from the last of N `zmesh join` processes coming up to a full mesh
(every node connected to every other), per strategy, against the plain baseline (every
node `--seed` the first one, measured in the same run); how long a SIGKILLed node,
restarted at its address, takes to be reconnected by a peer that names no seed; and how
long a node paused (SIGSTOP) past `down_after` takes to be reconnected once resumed,
with no seed naming anybody. Both against a fresh node's plain `--seed` join.
Real OS processes on loopback (`dns:` needs several addresses per name: see
tests/cluster/test_netns_os.py).

    python scripts/bench_discovery.py [--sizes 3 16] [--strategies range gossip file static]

As root with `ip netns`, also: how long `zmesh join` takes to exit on SIGTERM while
`dns:` waits on a DNS server that never answers, against the same node with `static:`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from ports import free_block

import zmesh

COOKIE = "bench-discovery"
SILENT_DNS = "dns:peers.zmesh.test:7000"  # asked of a DNS server that never answers


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
            if not line:
                raise RuntimeError(f"{key.data.args} exited {key.data.wait()} before it was up")
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


async def mesh_time(strategy: str, n: int, workdir: Path) -> float:
    base = free_block(n)
    addresses = [f"tcp://127.0.0.1:{base + i}" for i in range(n)]
    hosts = workdir / f"hosts-{base}"
    hosts.write_text("\n".join(addresses) + "\n")
    spec = {
        "seed": ["--seed", addresses[0]],
        "range": ["--discover", f"range:127.0.0.1:{base}-{base + n - 1}"],
        "gossip": ["--discover", f"gossip:239.255.77.90:{free_block(1)}"],
        "file": ["--discover", f"file:{hosts}"],
        "static": ["--discover", "static:" + ",".join(addresses)],
    }[strategy]
    names = [f"b{i:02d}" for i in range(n)]
    procs = [
        launch(name, address, *(spec if i or strategy != "seed" else []))
        for i, (name, address) in enumerate(zip(names, addresses, strict=True))
    ]
    try:
        last_up = wait_up(procs)
        async with zmesh.Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(addresses[0])
            return await full_mesh(observer, names) - last_up
    finally:
        stop(procs)


async def join_time() -> float:
    """The baseline: a fresh node with `--seed b`, from printing "up" to b seeing it."""
    base = free_block(2)
    a_addr, b_addr = (f"tcp://127.0.0.1:{base + i}" for i in range(2))
    b = launch("jb", b_addr)
    procs = [b]
    try:
        wait_up(procs)
        async with zmesh.Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(b_addr)
            a = launch("ja", a_addr, "--seed", b_addr)
            procs.append(a)
            up = wait_up([a])
            while "ja" not in (await observer.node_info("jb"))["nodes"]:
                await asyncio.sleep(0.01)
            return time.perf_counter() - up
    finally:
        stop(procs)


async def heal_time(workdir: Path) -> float:
    """a found b through a hosts file, then emptied; a is paused past down_after and
    resumed: seconds from SIGCONT to b seeing a again (each retries the peer it lost)."""
    base = free_block(2)
    a_addr, b_addr = (f"tcp://127.0.0.1:{base + i}" for i in range(2))
    hosts = workdir / f"heal-{base}"
    hosts.write_text(b_addr + "\n")
    b = launch("hb", b_addr)
    a = launch("ha", a_addr, "--discover", f"file:{hosts}")
    procs = [a, b]
    try:
        wait_up(procs)
        async with zmesh.Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(b_addr)
            while sorted(observer.nodes()) != ["ha", "hb"]:
                await asyncio.sleep(0.02)
        hosts.write_text("")
        await asyncio.sleep(1.0)  # a has re-read it
        a.send_signal(signal.SIGSTOP)
        await asyncio.sleep(5.0)  # past down_after (2 s); b's backoff at its cap
        async with zmesh.Node("watch2", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(b_addr)
            if (await observer.node_info("hb"))["nodes"]:
                raise RuntimeError("b did not declare the paused node down")
            resumed = time.perf_counter()
            a.send_signal(signal.SIGCONT)
            while "ha" not in (await observer.node_info("hb"))["nodes"]:
                await asyncio.sleep(0.01)
            return time.perf_counter() - resumed
    finally:
        a.send_signal(signal.SIGCONT)
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


def exit_time(*discover: str) -> float:
    """Seconds from SIGTERM to exit of a `zmesh join` (with `discover`, e.g. `--discover
    SPEC`) on a network namespace host whose resolv.conf names a DNS server that never
    answers."""
    import netns

    network = netns.Network()
    try:
        host = network.host("h")
        silent = str(network.subnet.network_address + 250)  # nobody there
        host.resolv_conf(f"nameserver {silent}\noptions timeout:30 attempts:2\n")
        proc = subprocess.Popen(
            [*host.exec, sys.executable, "-m", "zmesh", "join", "h", "--listen",
             "tcp://0.0.0.0:7000", "--advertise", f"tcp://{host.ip}:7000",
             *discover],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, ZMESH_COOKIE=COOKIE),
        )  # fmt: skip
        wait_up([proc])
        time.sleep(1.0)  # a lookup is in flight
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        return time.perf_counter() - start
    finally:
        network.close()


def spread(times: list[float]) -> str:
    return f"{min(times):.2f}-{max(times):.2f} s"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[3, 16])
    parser.add_argument("--strategies", nargs="+", default=["range", "gossip", "file", "static"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.sizes:
            plain = [await mesh_time("seed", n, workdir) for _ in range(args.rounds)]
            print(f"seed    n={n:2}: full mesh {spread(plain)} after the last node is up "
                  f"(baseline, {args.rounds} rounds)", flush=True)  # fmt: skip
            for strategy in args.strategies:
                times = [await mesh_time(strategy, n, workdir) for _ in range(args.rounds)]
                ratio = statistics.median(times) / statistics.median(plain)
                print(f"{strategy:7} n={n:2}: full mesh {spread(times)} "
                      f"(median {ratio:.1f}x the seed baseline)", flush=True)  # fmt: skip
        joins = [await join_time() for _ in range(args.rounds)]
        print(f"a fresh node joining by --seed: seen {spread(joins)} after it is up (baseline)")
        restarts = [await reconnect_time() for _ in range(args.rounds)]
        ratio = statistics.median(restarts) / statistics.median(joins)
        print(f"reconnect after SIGKILL+restart, no seed naming it: {spread(restarts)} after "
              f"it is up (median {ratio:.1f}x a fresh join)", flush=True)  # fmt: skip
        import netns

        why = netns.unavailable()
        if why is None:
            plain = [exit_time() for _ in range(args.rounds)]
            stuck = [exit_time("--discover", SILENT_DNS) for _ in range(args.rounds)]
            ratio = statistics.median(stuck) / statistics.median(plain)
            print(f"exit on SIGTERM: {spread(plain)} without discovery (baseline), {spread(stuck)} "
                  f"while dns: waits on a silent server ({ratio:.1f}x)", flush=True)  # fmt: skip
        else:
            print(f"exit on SIGTERM with a silent DNS server: not measured ({why})")
        heals = [await heal_time(workdir) for _ in range(args.rounds)]
        ratio = statistics.median(heals) / statistics.median(joins)
        print(f"reconnect after a pause past down_after, no seed at all: {spread(heals)} "
              f"after SIGCONT (median {ratio:.1f}x a fresh join)", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
