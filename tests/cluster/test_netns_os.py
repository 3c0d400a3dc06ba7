"""`zmesh join` processes on separate "hosts" (Linux network namespaces on a bridge):
every node binds the same wildcard `tcp://0.0.0.0:7000`, so what it advertises is the
only address a peer can dial. Also: `dns:` through a stub DNS server the hosts'
`/etc/resolv.conf` names, and a partition made by unplugging a host's cable.

Skipped (with the reason) unless run as root on a machine that allows `ip netns`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from dns_stub import AAAA, A, DnsStub
from joined import Joined, start_join

from zmesh import Node

COOKIE = "netns-os-cookie"
PORT = 7000
WILDCARD = f"tcp://0.0.0.0:{PORT}"

UNAVAILABLE = netns.unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


@pytest.fixture
def network() -> Iterator[netns.Network]:
    net = netns.Network()
    try:
        yield net
    finally:
        net.close()


def join_on(host: netns.Host, name: str, *args: str) -> Joined:
    """`zmesh join NAME --listen tcp://0.0.0.0:7000 ...` on `host`."""
    return start_join(name, COOKIE, "--listen", WILDCARD, *args, prefix=host.exec)


def observer(network: netns.Network, name: str = "watch") -> Node:
    """A hidden node in the root namespace, listening on the bridge (peers dial it back)."""
    return Node(name, cookie=COOKIE, hidden=True, listen=f"tcp://{network.gateway}:0")


def at(host: netns.Host) -> str:
    return f"tcp://{host.ip}:{PORT}"


async def settle(observer: Node, names: list[str], timeout: float = 15.0) -> None:
    """Until every named node sees exactly the others (AssertionError past `timeout`)."""
    want = {n: sorted(set(names) - {n}) for n in names}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen = {}
        for n in names:
            try:
                seen[n] = (await observer.node_info(n, timeout=1.0))["nodes"]
            except Exception as exc:  # not connected to it (yet)
                seen[n] = repr(exc)
        if seen == want:
            return
        if loop.time() > deadline:
            raise AssertionError(f"views {seen} != {want} within {timeout} s")
        await asyncio.sleep(0.1)


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(90)
async def test_a_wildcard_bound_node_is_reached_by_a_third_host_through_what_it_advertised(
    network: netns.Network,
) -> None:
    """a, b and c each bind 0.0.0.0:7000 on their own host; c knows only b, and learns
    a from b's peer list: it can reach a only through a's advertised address."""
    ha, hb, hc = (network.host(n) for n in "abc")
    nodes = [join_on(ha, "a", "--advertise", at(ha))]
    nodes.append(join_on(hb, "b", "--advertise", at(hb), "--seed", at(ha)))
    nodes.append(join_on(hc, "c", "--advertise", at(hc), "--seed", at(hb)))
    try:
        async with observer(network) as obs:
            await obs.connect(at(hc))
            await settle(obs, ["a", "b", "c"])
            c_info = await obs.node_info("c")
            assert c_info["peer_addresses"] == {"a": at(ha), "b": at(hb)}
            assert (await obs.node_info("a"))["bound"] == WILDCARD
        # `zmesh nodes` on host c, as `kubectl exec` runs it in a pod whose environment
        # holds the joined node's $ZMESH_ADVERTISE: every node is listed, by what it
        # advertised (each dials the command's node back at c's address).
        env = dict(os.environ, ZMESH_COOKIE=COOKIE, ZMESH_ADVERTISE=at(hc))
        listing = subprocess.run(
            [*hc.exec, sys.executable, "-m", "zmesh", "nodes", "--json", "--seed", at(hc)],
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        rows = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
        assert {r["name"]: r["address"] for r in rows} == {
            "a": at(ha), "b": at(hb), "c": at(hc)
        }  # fmt: skip
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.timeout(60)
async def test_a_wildcard_bind_without_advertise_advertises_the_hosts_routable_address(
    network: netns.Network,
) -> None:
    routed = network.host("r", routed=True)
    node = join_on(routed, "r")
    try:
        async with observer(network) as obs:
            await obs.connect(at(routed))
            info = await obs.node_info("r")
            assert (info["address"], info["bound"]) == (at(routed), WILDCARD)
    finally:
        node.stop()


@pytest.mark.timeout(60)
def test_a_wildcard_bind_without_advertise_on_a_host_with_no_route_refuses_naming_the_flag(
    network: netns.Network,
) -> None:
    lonely = network.host("l")  # only its /24: no outward route, so no routable address
    result = subprocess.run(
        [*lonely.exec, sys.executable, "-m", "zmesh", "join", "l", "--listen", WILDCARD],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, ZMESH_COOKIE=COOKIE),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--advertise" in result.stderr
    assert WILDCARD in result.stderr


@pytest.mark.timeout(90)
async def test_joined_nodes_find_each_other_by_dns_through_the_hosts_resolver(
    network: netns.Network,
) -> None:
    """The hosts' resolv.conf names a stub DNS server on the bridge; `dns:NAME:PORT` is
    looked up through the system resolver (A and AAAA), and a host added to the record
    later is joined on a later poll."""
    name = "peers.zmesh.test"
    hosts = [network.host(n) for n in "abc"]
    for host in hosts:
        host.resolv_conf(f"nameserver {network.gateway}\noptions timeout:1 attempts:2\n")
    records = {name: [h.ip for h in hosts[:2]] + ["fd77::1"]}  # the AAAA is not dialled here
    stub = DnsStub(records, network.gateway)
    spec = f"dns:{name}:{PORT}"
    nodes: list[Joined] = []
    try:
        for host, n in zip(hosts[:2], "ab", strict=True):
            nodes.append(join_on(host, n, "--advertise", at(host), "--discover", spec))
        async with observer(network) as obs:
            await obs.connect(at(hosts[0]))
            await settle(obs, ["a", "b"])
            for host in hosts[:2]:
                assert stub.queries[(host.ip, name, A)] >= 1
                assert stub.queries[(host.ip, name, AAAA)] >= 1
            # c is up, found by nobody until the record names it.
            nodes.append(join_on(hosts[2], "c", "--advertise", at(hosts[2])))
            await asyncio.sleep(1.5)
            assert (await obs.node_info("a"))["nodes"] == ["b"]
            records[name].append(hosts[2].ip)
            await settle(obs, ["a", "b", "c"])
    finally:
        for node in nodes:
            node.stop()
        stub.close()


@pytest.mark.timeout(120)
async def test_a_host_cut_off_past_down_after_reconnects_when_its_cable_is_back(
    network: netns.Network, tmp_path: Path
) -> None:
    """c found a through a hosts file, which is then emptied: no seed names anybody. c's
    cable is unplugged until a has declared it down, then plugged back: a and c find
    each other again on their own (each retries the peer it lost)."""
    ha, hc = network.host("a"), network.host("c")
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(f"{at(ha)}\n")
    nodes = [join_on(ha, "a", "--advertise", at(ha))]
    nodes.append(join_on(hc, "c", "--advertise", at(hc), "--discover", f"file:{hosts_file}"))
    try:
        async with observer(network, "watch1") as obs:
            await obs.connect(at(ha))
            await settle(obs, ["a", "c"])
        hosts_file.write_text("# nobody\n")
        await asyncio.sleep(1.0)  # c has re-read it (one poll is 0.5 s)
        network.cut(hc)
        await asyncio.sleep(5.0)  # well past down_after (2 s)
        # A fresh observer that never knew c: it cannot be the one that finds it again.
        async with observer(network, "watch2") as obs:
            await obs.connect(at(ha))
            assert (await obs.node_info("a"))["nodes"] == []
            network.mend(hc)
            await wait_for(lambda: obs.nodes() == ["a", "c"], 15)
            await settle(obs, ["a", "c"])
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.timeout(60)
async def test_a_node_waiting_on_a_dns_server_that_never_answers_leaves_at_once_on_sigterm(
    network: netns.Network,
) -> None:
    """A lookup stuck in the resolver (30 s per try here) must not hold the exit: SIGTERM
    ends the node with status 0 well before the lookup would (`stop` kills after 10 s)."""
    name = "hangs.zmesh.test"
    host = network.host("h")
    host.resolv_conf(f"nameserver {network.gateway}\noptions timeout:30 attempts:2\n")
    records: dict[str, list[str] | None] = {name: None}
    with DnsStub(records, network.gateway) as stub:
        node = join_on(host, "h", "--advertise", at(host), "--discover", f"dns:{name}:{PORT}")
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not stub.queries and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert stub.queries  # a lookup is in flight, unanswered
        finally:
            assert node.stop(timeout=10.0) == 0, node.output()


@pytest.mark.timeout(60)
async def test_gossip_between_hosts_announces_the_advertised_address(
    network: netns.Network,
) -> None:
    """Two hosts, each bound to 0.0.0.0:7000, find each other by multicast over the
    bridge: each dials what the other announced, its advertised address."""
    ha, hb = network.host("a"), network.host("b")
    spec = f"gossip:239.255.77.81:{PORT + 1}"
    nodes = [
        join_on(h, n, "--advertise", at(h), "--discover", spec) for h, n in ((ha, "a"), (hb, "b"))
    ]
    try:
        async with observer(network) as obs:
            await obs.connect(at(ha))
            await settle(obs, ["a", "b"])
            assert (await obs.node_info("a"))["peer_addresses"] == {"b": at(hb)}
            assert (await obs.node_info("b"))["peer_addresses"] == {"a": at(ha)}
    finally:
        for node in nodes:
            node.stop()
