"""Why a node cannot join: ConnectError.reason, and seed failures reported as they recur."""

from __future__ import annotations

import socket

import pytest

import zmesh
from zmesh import ConnectError, Node, NodeConfig
from zmesh.testing import wait_until

from ..conftest import COOKIE

# Seeds retried every 50 ms; an unanswered handshake given up after 0.3 s.
RETRY = NodeConfig(tick=0.1, down_after=0.5, seed_retry=0.05, connect_timeout=0.3)


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


async def test_a_seed_with_another_cookie_is_reported_as_bad_cookie_on_every_retry() -> None:
    async with Node("guarded", cookie="one") as guarded:
        seen: list[tuple[str, ConnectError]] = []
        ignored: list[tuple[str, ConnectError]] = []
        joiner = Node("joiner", cookie="two", seeds=[guarded.address], config=RETRY)  # type: ignore[list-item]
        joiner.on_seed_error(lambda address, error: seen.append((address, error)))
        joiner.on_seed_error(lambda address, error: ignored.append((address, error)))()
        async with joiner:
            await wait_until(lambda: len(seen) >= 3, what="three failed attempts reported")
        assert {(address, error.reason) for address, error in seen} == {
            (guarded.address, "bad_cookie")
        }
        assert all("cookie" in str(error) for _, error in seen)
        assert ignored == []  # unsubscribed before the node started
        assert joiner.nodes() == [] and guarded.nodes() == []


async def test_a_name_taken_by_a_live_member_is_reported_naming_the_holder() -> None:
    async with (
        Node("n1", cookie=COOKIE, config=RETRY) as n1,
        Node("n2", cookie=COOKIE, config=RETRY) as n2,
    ):
        await n2.connect(n1.address)  # type: ignore[arg-type]
        seen: list[tuple[str, ConnectError]] = []
        impostor = Node("n2", cookie=COOKIE, seeds=[n1.address], config=RETRY)  # type: ignore[list-item]
        impostor.on_seed_error(lambda address, error: seen.append((address, error)))
        async with impostor:
            await wait_until(lambda: len(seen) >= 2)
        address, error = seen[0]
        assert address == n1.address and error.reason == "name_clash"
        assert "'n2'" in str(error) and str(n2.address) in str(error)
        assert n1.nodes() == ["n2"]


async def test_an_unreachable_seed_is_reported_as_unreachable() -> None:
    nowhere = free_address()
    seen: list[tuple[str, ConnectError]] = []
    node = Node("alone", cookie=COOKIE, seeds=[nowhere], config=RETRY)
    node.on_seed_error(lambda address, error: seen.append((address, error)))
    async with node:
        await wait_until(lambda: len(seen) >= 2, what="two timed-out attempts reported")
    assert {(address, error.reason) for address, error in seen} == {(nowhere, "unreachable")}


async def test_connect_errors_say_why() -> None:
    async with (
        Node("a", cookie=COOKIE) as a,
        Node("other-cookie", cookie="other") as stranger,
        Node("a", cookie=COOKIE) as twin,
        Node("b", cookie=COOKIE) as b,
    ):
        with pytest.raises(ConnectError) as bad_cookie:
            await stranger.connect(a.address, timeout=3)  # type: ignore[arg-type]
        assert bad_cookie.value.reason == "bad_cookie"
        with pytest.raises(ConnectError) as same_name:  # refused by a: it has our name
            await twin.connect(a.address, timeout=3)  # type: ignore[arg-type]
        assert same_name.value.reason == "name_clash"
        assert "'a'" in str(same_name.value) and str(a.address) in str(same_name.value)
        await b.connect(a.address)  # type: ignore[arg-type]
        async with Node("b", cookie=COOKIE) as impostor:
            with pytest.raises(ConnectError) as taken:  # refused by the peer
                await impostor.connect(a.address, timeout=3)  # type: ignore[arg-type]
        assert taken.value.reason == "name_clash" and str(b.address) in str(taken.value)
        with pytest.raises(ConnectError) as unreachable:
            await a.connect(free_address(), timeout=0.2)
        assert unreachable.value.reason == "unreachable"
    assert isinstance(unreachable.value, zmesh.ZmeshError)
    assert ConnectError("made by hand").reason == "unreachable"


async def test_a_node_answering_with_a_live_peers_name_is_refused_not_taken_for_it() -> None:
    async with (
        Node("n1", cookie=COOKIE) as n1,
        Node("n2", cookie=COOKIE) as n2,
        Node("n2", cookie=COOKIE) as impostor,
    ):
        await n1.connect(n2.address)  # type: ignore[arg-type]
        with pytest.raises(ConnectError) as clash:  # found in the impostor's CHALLENGE
            await n1.connect(impostor.address, timeout=3)  # type: ignore[arg-type]
        assert clash.value.reason == "name_clash"
        assert "'n2'" in str(clash.value) and str(n2.address) in str(clash.value)
        assert n1.nodes() == ["n2"]
        session = n1._dist.peer("n2") if n1._dist is not None else None
        assert session is not None and session.creation == n2.creation
        assert impostor.nodes() == []
