"""Hostile peers: a node refuses, counts and survives whatever arrives on its socket."""

from __future__ import annotations

import asyncio
import os

import msgpack
import pytest
import zmesh_test_app as app
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh import Node, NodeConfig
from zmesh.core import protocol as proto
from zmesh.core.codec import Codec, encode
from zmesh.core.protocol import Kind

from ..conftest import COOKIE


@pytest.fixture
def raw_dealer():  # type: ignore[no-untyped-def]
    ctx = zmq.Context()
    sockets: list[zmq.Socket[bytes]] = []

    def make(address: str) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close(0)
    ctx.term()


async def still_serves(a: Node, b: Node) -> None:
    """a and b still exchange messages both ways."""
    async with b.process() as me:
        echo = a.spawn(app.echo)
        b.send(echo, (me.pid, "ping"))
        assert await me.receive(timeout=3) == ("echo", "ping")


async def settle() -> None:
    await asyncio.sleep(0.15)


GARBAGE = {
    "random bytes": os.urandom(300),
    "empty frame": b"",
    "not an array": encode("hello"),
    "empty array": b"\x90",
    "unknown kind": proto.frame([encode([99, 1, 2])], 0),
    "truncated msgpack": proto.frame([encode([Kind.HELLO, 1, "x"])], 0)[:-2],
    "bomb: array32 header": b"\xdd\xff\xff\xff\xff",
    "data before handshake": proto.frame([encode([Kind.SEND, 1, 1, b"x"])], 0),
    "hello with wrong types": proto.frame([encode([Kind.HELLO, 1, 5, "x", 3, b"n"])], 0),
    "hello with wrong arity": proto.frame([encode([Kind.HELLO, 1])], 0),
    "auth without hello": proto.frame([encode([Kind.AUTH, b"x" * 16, b"y" * 32])], 0),
    "challenge without hello": proto.frame(
        [encode([Kind.CHALLENGE, 1, "z", 1, "tcp://x:1", b"n" * 16, b"m" * 16, b"p"])], 0
    ),
    "oversized untrusted frame": proto.frame([encode([Kind.HELLO, "x" * 10_000])], 0),
}


@pytest.mark.parametrize("payload", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_garbage_from_a_stranger_is_refused_and_counted(  # type: ignore[no-untyped-def]
    two_nodes, raw_dealer, payload
) -> None:
    a, b = two_nodes
    before = sum(v for k, v in a.stats().items() if k not in ("processes", "peers"))
    sock = raw_dealer(a.address)
    sock.send(payload)
    await settle()
    after = sum(v for k, v in a.stats().items() if k not in ("processes", "peers"))
    assert after > before
    await still_serves(a, b)


async def test_wrong_frame_counts_are_refused(two_nodes, raw_dealer) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    sock = raw_dealer(a.address)
    sock.send_multipart([b"one", b"two", b"three"])
    await settle()
    assert a.stats()["bad_frame_count"] == 1
    await still_serves(a, b)


async def test_frames_over_maxmsgsize_disconnect_only_the_sender() -> None:
    config = NodeConfig(max_message_size=64 * 1024)
    async with Node("a", cookie=COOKIE, config=config) as a, Node("b", cookie=COOKIE) as b:
        await b.connect(a.address)  # type: ignore[arg-type]
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(a.address)  # type: ignore[arg-type]
        sock.send(b"\x00" * (512 * 1024))
        await settle()
        sock.close(0)
        ctx.term()
        await still_serves(a, b)


async def test_a_peer_that_vanishes_mid_handshake_is_forgotten(raw_dealer) -> None:  # type: ignore[no-untyped-def]
    config = NodeConfig(handshake_timeout=0.3, tick=0.1, down_after=0.5)
    async with Node("a", cookie=COOKIE, config=config) as a, Node("b", cookie=COOKIE) as b:
        await b.connect(a.address)  # type: ignore[arg-type]
        for i in range(20):
            sock = raw_dealer(a.address)
            address, nonce = "tcp://127.0.0.1:9", os.urandom(16)
            hello = [Kind.HELLO, proto.VERSION, f"ghost{i}", 1, address, nonce, False]
            sock.send(proto.frame([encode(hello)], 0))
        await asyncio.sleep(0.2)
        assert a._dist is not None and len(a._dist._handshake._inbound) == 20
        await asyncio.sleep(0.6)
        assert len(a._dist._handshake._inbound) == 0
        assert a.stats()["handshakes_expired"] == 20
        await still_serves(a, b)


async def test_a_hello_of_another_protocol_version_is_answered_with_a_version_refusal(  # type: ignore[no-untyped-def]
    two_nodes, raw_dealer
) -> None:
    a, b = two_nodes
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # where the stranger says it listens
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        nonce = os.urandom(16)
        # A later version may add fields, but keeps version .. nonce where they are.
        hello = [Kind.HELLO, proto.VERSION + 1, "future", 1, f"tcp://127.0.0.1:{port}", nonce]
        raw_dealer(a.address).send(proto.frame([encode([*hello, False, {"new": "field"}])], 0))
        assert await asyncio.to_thread(router.poll, 3000), "no answer to the hello"
        _identity, data = router.recv_multipart()
        refusal = proto.decode_frame(Codec(), data)[1]
        assert refusal[:3] == [Kind.REFUSE, nonce, proto.REFUSE_VERSION]
    finally:
        router.close(0)
        ctx.term()
    await still_serves(a, b)


async def test_bad_envelopes_from_a_trusted_peer_are_counted_not_fatal(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    assert b._dist is not None
    peer = b._dist.peer("a")
    assert peer is not None
    target = a.spawn(app.idle)
    bad = [
        encode([Kind.SEND, 1]),  # wrong arity
        encode([Kind.SEND, target.id, a.creation, b"\xc1"]),  # undecodable payload
        encode([Kind.LINK, "not a pid", "x"]),
        encode([Kind.EXIT, 1, 2, 3, 4]),
        encode([Kind.MONITOR, 1, 2, 3]),
        encode([Kind.REPLY, 1, True]),
        encode([Kind.CAST, "no-such-op", None]),
        encode([Kind.PEERS, 5]),
    ]
    for env in bad:
        peer.link.enqueue(env)
    await settle()
    stats = a.stats()
    refused = stats.get("bad_envelopes", 0) + stats.get("bad_payloads", 0)
    refused += stats.get("unexpected_envelopes", 0)
    assert refused == len(bad)
    assert a.is_alive(target)
    await still_serves(a, b)
    await still_serves(b, a)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda kind, fields: [msgpack.packb([kind, *fields])],
                st.sampled_from([int(k) for k in Kind] + [0, 99]),
                st.lists(
                    st.integers(-(2**63), 2**64 - 1)
                    | st.binary(max_size=20)
                    | st.text(max_size=10)
                    | st.none(),
                    max_size=8,
                ),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    trusted=st.booleans(),
)
def test_fuzzed_inbound_frames_never_escape_the_node(fuzz_pair, frames, trusted) -> None:  # type: ignore[no-untyped-def]
    loop, a, identity = fuzz_pair
    dist = a._dist

    async def feed() -> None:
        for data in frames:
            peer = dist.trusted.get(identity)
            if isinstance(data, list):  # envelopes: number the frame as the link would
                data = proto.frame(data, peer.next_seq if trusted and peer else 0)
            # What the ROUTER's reader calls for every inbound message; raising is a failure.
            dist._on_frame(identity if trusted else os.urandom(16), [data])
        await asyncio.sleep(0)

    loop.run_until_complete(feed())
    assert a.name == "a" and a.stats()["processes"] >= 0


@pytest.fixture(scope="module")
def fuzz_pair():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    a = Node("a", cookie=COOKIE)
    b = Node("b", cookie=COOKIE)
    loop.run_until_complete(a.boot())
    loop.run_until_complete(b.boot())
    loop.run_until_complete(b.connect(a.address))  # type: ignore[arg-type]
    loop.run_until_complete(asyncio.sleep(0.1))
    assert a._dist is not None
    identity = a._dist.sessions["b"].identity
    yield loop, a, identity
    loop.run_until_complete(b.stop())
    loop.run_until_complete(a.stop())
    loop.close()
