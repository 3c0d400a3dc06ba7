"""Busy-polling after a lone frame (`NodeConfig.busy_poll`), on real sockets: a spin
reads a frame that arrives while it polls, spins that catch nothing grow rarer, and a
node with `busy_poll=None` never spins. Real tcp on loopback."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from zmesh import Caller, ConfigError, GenServer, Node, NodeConfig, Process
from zmesh.runtime.transport import ZmqTransport
from zmesh.testing import wait_until

from ..conftest import COOKIE


async def spin_out(transport: ZmqTransport) -> None:
    """Let a spin run its course (its poll re-queues itself until it ends)."""
    while transport._spinning:
        await asyncio.sleep(0)


async def test_spins_that_catch_nothing_grow_rarer() -> None:
    frames: list[list[bytes]] = []
    transport = ZmqTransport(
        NodeConfig(busy_poll=0.0002), lambda ident, parts, user: frames.append(parts), print
    )
    transport.bind("tcp://127.0.0.1:0")
    try:
        for _ in range(64):  # 64 lone frames left; nobody answers
            transport.spin()
            await spin_out(transport)
        # Spins at frames 1, 3, 7, 15, 31 and 63: each miss doubles the gap.
        assert transport.spins == 6 and transport.spins_caught == 0 and not frames
    finally:
        await transport.close()


async def test_a_frame_that_arrives_while_spinning_is_read_by_the_spin() -> None:
    frames: list[list[bytes]] = []
    transport = ZmqTransport(
        NodeConfig(busy_poll=0.01), lambda ident, parts, user: frames.append(parts), print
    )
    address = transport.bind("tcp://127.0.0.1:0")
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    try:
        dealer.send(b"hello")
        await wait_until(lambda: len(frames) == 1, 5)  # connected, and read normally
        transport._spin_backoff.missed()  # an earlier spin missed: the next frame skips
        transport._spin_backoff.skip = 0
        for attempt in range(20):  # a loaded machine may hold a frame past 10 ms
            transport.spin()
            dealer.send(b"answer %d" % attempt)
            await spin_out(transport)
            if transport.spins_caught:
                break
            await wait_until(lambda n=attempt + 2: len(frames) == n, 5)  # read after the spin
        assert transport.spins_caught == 1 and transport._spin_backoff.misses == 0
        await wait_until(lambda: frames[-1][0].startswith(b"answer"), 5)
    finally:
        dealer.close(0)
        await transport.close()


async def test_a_calls_frame_left_unspun_and_answered_in_time_makes_calls_spin_again() -> None:
    frames: list[list[bytes]] = []
    transport = ZmqTransport(
        NodeConfig(busy_poll=0.01), lambda ident, parts, user: frames.append(parts), print
    )
    address = transport.bind("tcp://127.0.0.1:0")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    try:
        dealer.send(b"hello")
        await wait_until(lambda: len(frames) == 1, 5)
        for attempt in range(20):  # a loaded machine may hold a frame past 10 ms
            calls = transport._call_backoff
            calls.missed()  # calls backed off: the next call's frame leaves unspun
            assert calls.skip == 1
            transport.spin("reply")
            assert not transport._spinning and transport.spins == 0
            dealer.send(b"reply %d" % attempt)
            await wait_until(lambda n=attempt + 2: len(frames) == n, 5)
            if calls.misses == 0:
                break
        assert calls.misses == 0 and calls.skip == 0  # the next call's frame spins
        assert transport._spin_backoff.misses == 0  # messages keep their own backoff
        transport.spin("reply")
        assert transport._spinning
    finally:
        dealer.close(0)
        await transport.close()


async def test_a_reply_frame_is_followed_by_no_spin_and_a_call_frame_is() -> None:
    transport = ZmqTransport(NodeConfig(busy_poll=0.0002), lambda *frame: None, print)
    transport.bind("tcp://127.0.0.1:0")
    try:
        transport.spin("nothing")
        assert not transport._spinning and transport.spins == 0
        transport.spin("reply")
        assert transport._spinning and transport.spins == 1
        await spin_out(transport)
        # The miss is the calls' own: a message's frame still spins.
        assert transport._call_backoff.misses == 1 and transport._spin_backoff.misses == 0
        transport.spin("maybe")
        assert transport._spinning and transport.spins == 2
        await spin_out(transport)
    finally:
        await transport.close()


async def echo(proc: Process) -> None:
    while True:
        sender, message = await proc.receive()
        proc.send(sender, message)


async def test_a_round_trip_spins_and_busy_poll_none_never_does() -> None:
    async with (
        Node("a", cookie=COOKIE) as a,
        Node("b", cookie=COOKIE, config=NodeConfig(busy_poll=None)) as b,
    ):
        await b.connect(a.address)  # type: ignore[arg-type]
        await wait_until(lambda: a.nodes() == ["b"] and b.nodes() == ["a"], 5)
        server = a.spawn(echo)
        async with b.process() as me:
            for i in range(20):
                b.send(server, (me.pid, i))
                assert await me.receive(timeout=5) == i
        assert transport_of(a).spins > 0
        assert transport_of(b).spins == 0


async def test_in_a_call_loop_the_caller_spins_and_the_server_does_not() -> None:
    quiet = NodeConfig(tick=30.0, down_after=60.0)  # no heartbeat among the frames counted
    async with (
        Node("a", cookie=COOKIE, config=quiet) as a,
        Node("b", cookie=COOKIE, config=quiet) as b,
    ):
        await a.connect(b.address)  # type: ignore[arg-type]
        server = await b.start(Counter)
        await a.call(server, "inc")
        await asyncio.sleep(0.05)  # the connection's own traffic is over
        caller, served = transport_of(a), transport_of(b)
        calls_spun, served_spun = caller.spins, served.spins
        for _ in range(50):
            await a.call(server, "inc")
        assert caller.spins > calls_spun  # each call's frame may spin for its reply
        assert served.spins == served_spun  # the server's frames were replies: never


class Counter(GenServer):
    async def init(self) -> None:
        self.count = 0

    async def handle_call(self, request: object, caller: Caller) -> int:
        self.count += 1
        return self.count


def transport_of(node: Node) -> ZmqTransport:
    transport = node._dist._transport  # type: ignore[union-attr]
    assert isinstance(transport, ZmqTransport)
    return transport


def test_busy_poll_is_none_or_a_short_positive_time() -> None:
    assert NodeConfig().busy_poll == 300e-6
    for bad in (0, -1.0, 0.5, "1"):
        with pytest.raises(ConfigError, match="busy_poll"):
            NodeConfig(busy_poll=bad)  # type: ignore[arg-type]
