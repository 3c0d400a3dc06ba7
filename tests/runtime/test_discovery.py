"""Discovery strategies driving real nodes over loopback tcp, inside one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from ports import free_block

import zmesh
from zmesh import Node
from zmesh.discovery import Dns, Gossip, HostsFile, Range, Static, from_spec
from zmesh.testing import TEST_CONFIG, wait_until

from ..conftest import COOKIE


def test_from_spec_builds_each_strategy(tmp_path: Path) -> None:
    assert isinstance(from_spec("static:127.0.0.1:1"), Static)
    assert isinstance(from_spec("range:127.0.0.1:1-3"), Range)
    assert isinstance(from_spec(f"file:{tmp_path}/hosts"), HostsFile)
    assert isinstance(from_spec("gossip"), Gossip)
    assert isinstance(from_spec("dns:localhost:7000"), Dns)
    assert from_spec("range:127.0.0.1:1-3").name == "range:127.0.0.1:1-3"
    for strategy in (Static("h:1"), Range("127.0.0.1", 1), HostsFile(tmp_path)):
        assert isinstance(strategy, zmesh.Strategy)


def test_a_malformed_spelling_is_refused_when_the_node_is_made() -> None:
    with pytest.raises(zmesh.ConfigError, match="range:nope"):
        Node("a", cookie=COOKIE, discovery=["range:nope"])


async def test_three_nodes_with_only_a_port_range_form_one_cluster() -> None:
    base = free_block(3)
    spec = f"range:127.0.0.1:{base}-{base + 2}"
    nodes = [
        Node(f"r{i}", listen=f"tcp://127.0.0.1:{base + i}", cookie=COOKIE,
             config=TEST_CONFIG, discovery=[spec])
        for i in range(3)
    ]  # fmt: skip
    async with nodes[0], nodes[1], nodes[2]:
        await wait_until(lambda: all(len(n.nodes()) == 2 for n in nodes), 10)


async def test_a_hosts_file_change_is_picked_up_within_one_poll(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# nobody yet\n")
    async with (
        Node("a", cookie=COOKIE, config=TEST_CONFIG) as a,
        Node("b", cookie=COOKIE, config=TEST_CONFIG, discovery=[f"file:{hosts}"]) as b,
    ):
        await asyncio.sleep(2 * TEST_CONFIG.seed_retry)
        assert b.nodes() == []
        hosts.write_text(f"# a is up\n{a.address}\n")
        await wait_until(lambda: b.nodes() == ["a"], TEST_CONFIG.seed_retry + 2.0)


class Failing:
    """A strategy that fails, then fails the same way, then works."""

    interval: float | None = 0.02
    name = "failing"

    def __init__(self, target: str) -> None:
        self.target = target
        self.polls = 0

    async def candidates(self) -> Sequence[str]:
        self.polls += 1
        if self.polls <= 10:
            raise OSError("resolver down")
        return [self.target]


async def test_a_failing_strategy_is_logged_once_per_change_and_keeps_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zmesh.discovery")
    async with Node("a", cookie=COOKIE, config=TEST_CONFIG) as a:
        strategy = Failing(a.address)  # type: ignore[arg-type]
        async with Node("b", cookie=COOKIE, config=TEST_CONFIG, discovery=[strategy]) as b:
            await wait_until(lambda: b.nodes() == ["a"], 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "zmesh.discovery"]
    assert strategy.polls > 10
    assert lines == ["b: discovery failing failing: OSError: resolver down",
                     "b: discovery failing recovered"]  # fmt: skip


async def test_a_peer_restarted_at_its_address_is_reconnected_without_a_seed() -> None:
    """b joined a through `connect` only; a dies without a goodbye and comes back at
    the same address: b retries it with backoff and finds the new incarnation."""
    base = free_block(1)
    listen = f"tcp://127.0.0.1:{base}"
    async with Node("b", cookie=COOKIE, config=TEST_CONFIG) as b:
        a = Node("a", listen=listen, cookie=COOKIE, config=TEST_CONFIG)
        await a.boot()
        await b.connect(listen)
        assert a._dist is not None
        a._dist._membership.seeding = False
        await a._dist.close(linger=0)  # no BYE: like SIGKILL
        await wait_until(lambda: b.nodes() == [], 5)
        await asyncio.sleep(1.0)  # b has been retrying for a while
        async with Node("a", listen=listen, cookie=COOKIE, config=TEST_CONFIG):
            await wait_until(lambda: b.nodes() == ["a"], TEST_CONFIG.reconnect_cap + 3)
        await a.stop()


async def test_two_nodes_find_each_other_by_gossip_and_count_forgeries_and_replays() -> None:
    import os
    import socket as so
    import time

    from zmesh.core import gossip_wire as gw

    port = free_block(1)  # a free UDP port is near-certainly one here too
    spec = f"gossip:239.255.77.78:{port}"
    async with (
        Node("a", cookie=COOKIE, config=TEST_CONFIG, discovery=[spec]) as a,
        Node("b", cookie=COOKIE, config=TEST_CONFIG, discovery=[spec]) as b,
    ):
        await wait_until(lambda: a.nodes() == ["b"] and b.nodes() == ["a"], 5)
        key = gw.gossip_key(COOKIE.encode())
        genuine = gw.encode(key, "ghost", "tcp://127.0.0.1:1", time.time(), os.urandom(16))
        forged = gw.encode(b"x" * 32, "ghost", "tcp://127.0.0.1:1", time.time(), os.urandom(16))
        with so.socket(so.AF_INET, so.SOCK_DGRAM) as tx:
            tx.setsockopt(so.IPPROTO_IP, so.IP_MULTICAST_IF, so.inet_aton("127.0.0.1"))
            for packet in (genuine, genuine, forged, genuine[:20]):
                tx.sendto(packet, ("239.255.77.78", port))
        await wait_until(lambda: a.stats().get("gossip_malformed", 0) >= 1, 5)
        for n in (a, b):
            stats = n.stats()
            assert stats.get("gossip_replayed") == 1
            assert stats.get("gossip_forged") == 1
            assert stats.get("gossip_malformed") == 1


async def test_dns_finds_a_node_by_name() -> None:
    port = free_block(1)
    async with (
        Node("a", listen=f"tcp://127.0.0.1:{port}", cookie=COOKIE, config=TEST_CONFIG),
        Node("b", cookie=COOKIE, config=TEST_CONFIG, discovery=[f"dns:localhost:{port}"]) as b,
    ):
        await wait_until(lambda: b.nodes() == ["a"], 5)


async def test_a_hung_dns_lookup_is_asked_once_and_holds_neither_polls_nor_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolver never answers: polls wait on the one lookup in flight (no pile of
    threads), and the node closes at once, leaving the lookup on a daemon thread."""
    import socket
    import threading

    release = threading.Event()
    calls: list[threading.Thread] = []

    def hung(*args: object, **kwargs: object) -> list[object]:
        calls.append(threading.current_thread())
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    try:
        node = Node("a", cookie=COOKIE, config=TEST_CONFIG, discovery=["dns:peers.test:7000"])
        async with node:
            await wait_until(lambda: len(calls) == 1, 5)
            await asyncio.sleep(4 * TEST_CONFIG.seed_retry)  # several polls' worth
            assert len(calls) == 1
            assert calls[0].daemon
        assert calls[0].is_alive()  # closed while the lookup still hangs
    finally:
        release.set()


@pytest.mark.timeout(60)
async def test_a_range_over_a_slash_22_finds_a_node_at_its_last_address() -> None:
    """1022 addresses cannot all be dialled at once (a ZeroMQ context has about a
    thousand sockets; doing so stopped discovery): they are dialled a window at a time
    and the node at the block's last address is still found."""
    port = free_block(1)
    async with (
        Node("far", listen=f"tcp://127.0.7.254:{port}", cookie=COOKIE, config=TEST_CONFIG),
        Node(
            "scan", cookie=COOKIE, config=TEST_CONFIG, discovery=[Range("127.0.4.0/22", port)]
        ) as scan,
    ):
        await wait_until(lambda: scan.nodes() == ["far"], 30)
