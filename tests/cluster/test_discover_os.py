"""`zmesh join --discover` over real OS processes: range, file, static, gossip, dns; a
node SIGKILLed and restarted found again by each strategy and with no seed naming it;
a node paused (SIGSTOP) past `down_after` and resumed found again with no seed at all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from joined import Joined, start_join
from ports import free_block

from zmesh import Node

COOKIE = "discover-os-cookie"
POLL = 0.5  # NodeConfig.seed_retry, the default poll interval of every strategy


async def wait_for(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def views(observer: Node, names: list[str]) -> dict[str, list[str]]:
    """What each named node says its peers are (the hidden observer left out)."""
    return {n: sorted((await observer.node_info(n))["nodes"]) for n in names}


@pytest.mark.timeout(60)
async def test_three_joined_nodes_with_only_a_port_range_form_one_cluster() -> None:
    base = free_block(3)
    spec = f"range:127.0.0.1:{base}-{base + 2}"
    nodes: list[Joined] = []
    try:
        for i in range(3):
            listen = f"tcp://127.0.0.1:{base + i}"
            nodes.append(start_join(f"r{i}", COOKIE, "--listen", listen, "--discover", spec))
        names = ["r0", "r1", "r2"]
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(nodes[0].address)
            await wait_for(lambda: observer.nodes() == names, 10)
            expected = {n: sorted(set(names) - {n}) for n in names}
            for _ in range(50):
                if await views(observer, names) == expected:
                    break
                await asyncio.sleep(0.1)
            assert await views(observer, names) == expected
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.timeout(60)
async def test_a_hosts_file_edit_is_picked_up_within_one_poll(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# empty for now\n")
    first = start_join("f1", COOKIE)
    second = start_join("f2", COOKIE, "--discover", f"file:{hosts}")
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(first.address)
            await asyncio.sleep(2 * POLL)
            assert (await observer.node_info("f1"))["nodes"] == []
            hosts.write_text(f"# f1\n{first.address}\n")
            took = await wait_for(lambda: observer.nodes() == ["f1", "f2"], POLL + 3)
            assert took < POLL + 1.5, took
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(60)
async def test_a_sigkilled_node_restarted_at_its_address_is_found_without_a_seed_naming_it() -> (
    None
):
    """k1 joined k2 by `--discover static:`; k2 names nobody. k1 is SIGKILLed and
    restarted with no seeds at all: k2 retries the lost peer (backoff) and finds it."""
    base = free_block(2)
    a1, a2 = (f"tcp://127.0.0.1:{base + i}" for i in range(2))
    k2 = start_join("k2", COOKIE, "--listen", a2)
    k1 = start_join("k1", COOKIE, "--listen", a1, "--discover", f"static:{a2}")
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(a2)
            await wait_for(lambda: observer.nodes() == ["k1", "k2"], 10)
            k1.signal(signal.SIGKILL)
            k1.proc.wait(10)
            await wait_for(lambda: observer.nodes() == ["k2"], 5)
            await asyncio.sleep(2.0)  # k2 has been retrying for a while
            k1 = start_join("k1", COOKIE, "--listen", a1)
            # The target: back within 2 s of becoming reachable (the cap is 1.5 s).
            await wait_for(lambda: "k1" in observer.nodes(), 5)
            for _ in range(50):
                if (await observer.node_info("k2"))["nodes"] == ["k1"]:
                    break
                await asyncio.sleep(0.1)
            assert (await observer.node_info("k2"))["nodes"] == ["k1"]
    finally:
        k1.stop()
        k2.stop()


@pytest.mark.timeout(30)
def test_join_refuses_a_malformed_discover_spec_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmesh", "join", "x", "--discover", "range:127.0.0.1:9-1"],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, ZMESH_COOKIE="c"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "range:127.0.0.1:9-1" in result.stderr


@pytest.mark.timeout(60)
async def test_two_joined_nodes_find_each_other_by_gossip_and_count_forged_and_replayed() -> None:
    import socket
    import time

    from zmesh.core import gossip_wire as gw

    port = free_block(1)
    group = "239.255.77.79"
    spec = f"gossip:{group}:{port}"
    g1 = start_join("g1", COOKIE, "--discover", spec)
    g2 = start_join("g2", COOKIE, "--discover", spec)
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(g1.address)
            await wait_for(lambda: observer.nodes() == ["g1", "g2"], 10)
            assert (await observer.node_info("g1"))["nodes"] == ["g2"]
            key = gw.gossip_key(COOKIE.encode())
            genuine = gw.encode(key, "ghost", "tcp://127.0.0.1:1", time.time(), os.urandom(16))
            forged = gw.encode(b"k" * 32, "ghost", "tcp://127.0.0.1:1", time.time(), b"n" * 16)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                tx.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
                )
                for packet in (genuine, genuine, forged, genuine[:-5]):
                    tx.sendto(packet, (group, port))
            for _ in range(50):
                stats = (await observer.node_info("g2"))["stats"]
                if stats.get("gossip_forged", 0) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert stats.get("gossip_replayed") == 1
            assert stats.get("gossip_forged") == 2  # the bad key, and the truncated tag
    finally:
        g1.stop()
        g2.stop()


@pytest.mark.timeout(60)
async def test_join_takes_discovery_app_and_node_settings_from_a_toml_config(
    tmp_path: Path,
) -> None:
    first = start_join("c1", COOKIE)
    config = tmp_path / "zmesh.toml"
    config.write_text(
        f'discover = ["static:{first.address}"]\n'
        'app = "zmesh_test_app:app_start"\n'
        "[node]\ntick = 0.2\ndown_after = 1.5\n"
    )
    second = start_join("c2", COOKIE, "--config", str(config))
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(first.address)
            await wait_for(lambda: observer.nodes() == ["c1", "c2"], 10)
            await wait_for(lambda: observer.whereis("app_counter") is not None, 10)
            assert observer.whereis("app_counter").node == "c2"  # type: ignore[union-attr]
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(30)
def test_join_refuses_an_unknown_config_key_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "zmesh.toml"
    config.write_text('discovery = ["gossip"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "zmesh", "join", "x", "--config", str(config)],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, ZMESH_COOKIE="c"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "'discovery'" in result.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["static", "range", "file", "gossip", "dns"])
async def test_a_sigkilled_node_restarted_is_found_again_by_each_strategy(
    strategy: str, tmp_path: Path
) -> None:
    """s1 and s2 find each other only through `strategy`; s1 is SIGKILLed and started
    again with the same flags, and the two are connected again."""
    base = free_block(2)
    a1, a2 = (f"tcp://127.0.0.1:{base + i}" for i in range(2))
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{a1}\n{a2}\n")
    specs = {
        "static": (f"static:{a2}", f"static:{a1}"),
        "range": (f"range:127.0.0.1:{base}-{base + 1}",) * 2,
        "file": (f"file:{hosts}",) * 2,
        "gossip": (f"gossip:239.255.77.80:{free_block(1)}",) * 2,
        "dns": (f"dns:localhost:{base + 1}", f"dns:localhost:{base}"),
    }[strategy]

    def s1() -> Joined:
        return start_join("s1", COOKIE, "--listen", a1, "--discover", specs[0])

    first = s1()
    second = start_join("s2", COOKIE, "--listen", a2, "--discover", specs[1])
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(a2)
            await wait_for(lambda: observer.nodes() == ["s1", "s2"], 10)
            first.signal(signal.SIGKILL)
            first.proc.wait(10)
            await wait_for(lambda: observer.nodes() == ["s2"], 5)
            first = s1()
            await wait_for(lambda: observer.nodes() == ["s1", "s2"], 10)
            for _ in range(50):
                if (await observer.node_info("s2"))["nodes"] == ["s1"]:
                    break
                await asyncio.sleep(0.1)
            assert (await observer.node_info("s2"))["nodes"] == ["s1"]
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(90)
async def test_a_partition_healed_reconnects_with_no_seed_naming_the_lost_peer(
    tmp_path: Path,
) -> None:
    """p1 found p2 through a hosts file, which is then emptied: nobody names anybody.
    p1 is paused (SIGSTOP) until p2 has declared it down, then resumed: the two
    reconnect on their own (each retries the peer it lost, with backoff)."""
    hosts = tmp_path / "hosts"
    p2 = start_join("p2", COOKIE)
    hosts.write_text(f"{p2.address}\n")
    p1 = start_join("p1", COOKIE, "--discover", f"file:{hosts}")
    try:
        async with Node("watch1", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(p2.address)
            await wait_for(lambda: observer.nodes() == ["p1", "p2"], 10)
        hosts.write_text("# nobody\n")
        await asyncio.sleep(2 * POLL)  # p1 has re-read the file
        p1.signal(signal.SIGSTOP)
        await asyncio.sleep(5.0)  # well past down_after (2 s)
        # A fresh observer that never knew p1: it cannot be the one that finds it again.
        async with Node("watch2", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(p2.address)
            assert (await observer.node_info("p2"))["nodes"] == []
            assert observer.nodes() == ["p2"]
            p1.signal(signal.SIGCONT)
            for _ in range(100):
                if (await observer.node_info("p2"))["nodes"] == ["p1"]:
                    break
                await asyncio.sleep(0.1)
            assert (await observer.node_info("p2"))["nodes"] == ["p1"]
            await wait_for(lambda: observer.nodes() == ["p1", "p2"], 10)
            assert (await observer.node_info("p1"))["nodes"] == ["p2"]
    finally:
        p1.stop()
        p2.stop()
