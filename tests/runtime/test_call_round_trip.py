"""GenServer calls in one round trip: the CALL envelope carries the server's monitor of
the caller and the reply ends it. Every guarantee, over real tcp, with the monitor
tables of both nodes inspected afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import GenServer, Node, NodeConfig
from zmesh.core.codec import Codec
from zmesh.core.protocol import Kind
from zmesh.runtime.gen_server import CALL
from zmesh.terms import Pid
from zmesh.testing import Simulation, run_simulation, wait_until

COOKIE = "calls-cookie"
# No heartbeat inside a test: every envelope counted on the wire is one the calls sent.
QUIET = NodeConfig(tick=30.0, down_after=60.0)


class Holder(GenServer):
    """Holds calls ("hold") until "release"; "die" exits with a reason mid-call."""

    async def init(self) -> None:
        self.held: list[zmesh.Caller] = []

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "hold":
            self.held.append(caller)
            return zmesh.NOREPLY
        if request == "release":
            for waiting in self.held:
                self.reply(waiting, "released")
            count, self.held = len(self.held), []
            return count
        if request == "die":
            self.stop("asked to die")
        if request == "too long":  # over the caller's limit of items in one container
            return list(range(1_000_001))
        return request


class Forwarder(GenServer):
    """Hands each call to another server, which replies in its place."""

    async def init(self, to: Pid) -> None:
        self.to = to

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        self.node.send(self.to, ("answer", caller, request))
        return zmesh.NOREPLY


class Answerer(GenServer):
    async def handle_info(self, message: Any) -> None:
        _, caller, request = message
        self.reply(caller, ("answered", request))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """`a` calls servers on `b`, over real loopback tcp."""
    async with (
        Node("a", cookie=COOKIE, config=QUIET) as a,
        Node("b", cookie=COOKIE, config=QUIET) as b,
    ):
        await a.connect(b.address)  # type: ignore[arg-type]
        yield a, b


def cross(node: Node, peer: str) -> Any:
    assert node._dist is not None
    return node._dist._signals._cross.get(peer)


def no_call_state(a: Node, b: Node, server: Pid) -> bool:
    """No trace of any call left: a's router and a's view of b; b's server and view of a."""
    router = a._call_router()
    a_cross, b_cross = cross(a, "b"), cross(b, "a")
    proc = b._procs.get(server.id)
    return (
        not router._calls
        and not router.monitors
        and (a_cross is None or not a_cross.monitors)
        and (b_cross is None or (not b_cross.calls and not b_cross.watchers))
        and (proc is None or not proc.watchers)
    )


def envelopes(node: Node, peer: str) -> tuple[int, int]:
    """(envelopes in, frames out) on `node`'s session with `peer`."""
    stats = node.peer_stats()[peer]
    return stats["envelopes_in"], stats["frames_out"]


async def test_a_remote_call_is_one_envelope_each_way(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    assert await a.call(server, "warm") == "warm"
    await asyncio.sleep(0.05)
    a_in, a_out = envelopes(a, "b")
    b_in, b_out = envelopes(b, "a")
    calls = 200
    for i in range(calls):
        assert await a.call(server, i) == i
    await asyncio.sleep(0.05)  # anything a call left queued would have gone by now
    assert envelopes(b, "a")[0] - b_in == calls  # one CALL per call, no MONITOR/DEMONITOR
    assert envelopes(a, "b")[0] - a_in == calls  # one CALL_REPLY per call
    assert envelopes(a, "b")[1] - a_out == calls  # one frame each way
    assert envelopes(b, "a")[1] - b_out == calls
    assert no_call_state(a, b, server)


async def test_concurrent_remote_calls_leave_no_monitor_on_either_node(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    server = await b.start(app.Counter, 0)
    replies = await asyncio.gather(*(a.call(server, "increment") for _ in range(2000)))
    assert sorted(replies) == list(range(1, 2001))
    assert no_call_state(a, b, server)


async def test_a_timed_out_remote_call_sends_one_demonitor_and_drops_the_late_reply(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    server = await b.start(Holder)
    pending = asyncio.ensure_future(a.call(server, "hold", timeout=0.2))
    await wait_until(lambda: bool(b._procs[server.id].watchers), 2)
    [(held, ref)] = cross(b, "a").calls.values()
    assert held.pid == server and b._procs[server.id].watchers == {ref: a._call_router().pid}
    b_in = envelopes(b, "a")[0]
    with pytest.raises(zmesh.CallTimeout):
        await pending
    assert not a._call_router()._calls and cross(a, "b") is None  # at once on a
    await wait_until(lambda: no_call_state(a, b, server), 2)  # the DEMONITOR reached b
    assert envelopes(b, "a")[0] - b_in == 1
    # The reply the server sends late is dropped, and the next call is answered.
    assert await a.call(server, "release") == 1
    assert a._call_router().pending() == 0
    assert await a.call(server, "after") == "after"
    await wait_until(lambda: no_call_state(a, b, server), 2)


async def test_a_remote_server_dying_mid_call_fails_it_at_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    pending = asyncio.ensure_future(a.call(server, "hold", timeout=30))
    await wait_until(lambda: bool(b._procs[server.id].watchers), 2)
    b.exit(server, "kill")
    with pytest.raises(zmesh.CallError) as err:
        await asyncio.wait_for(pending, 5)
    assert err.value.reason == "killed"  # type: ignore[attr-defined]
    assert no_call_state(a, b, server)


async def test_a_server_that_exits_from_the_call_itself_fails_it(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    with pytest.raises(zmesh.CallError, match="asked to die"):
        await a.call(server, "die", timeout=5)
    await wait_until(lambda: no_call_state(a, b, server), 2)


async def test_a_remote_call_to_a_dead_pid_raises_noproc(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    b.exit(server, "kill")
    await wait_until(lambda: not b.is_alive(server), 2)
    with pytest.raises(zmesh.NoProc, match="does not exist"):
        await a.call(server, "x", timeout=5)
    assert no_call_state(a, b, server)


async def test_losing_the_server_node_fails_the_call_and_clears_the_caller() -> None:
    async with Node("a", cookie=COOKIE, config=QUIET) as a:
        b = Node("b", cookie=COOKIE, config=QUIET)
        await b.boot()
        await a.connect(b.address)  # type: ignore[arg-type]
        server = await b.start(Holder)
        pending = asyncio.ensure_future(a.call(server, "hold", timeout=30))
        await wait_until(lambda: bool(b._procs[server.id].watchers), 2)
        await b.stop()
        with pytest.raises(zmesh.NoProc, match="lost"):
            await asyncio.wait_for(pending, 5)
        assert not a._call_router()._calls and cross(a, "b") is None


async def test_losing_the_caller_node_clears_the_servers_monitors() -> None:
    async with Node("b", cookie=COOKIE, config=QUIET) as b:
        a = Node("a", cookie=COOKIE, config=QUIET)
        await a.boot()
        await a.connect(b.address)  # type: ignore[arg-type]
        server = await b.start(Holder)
        calls = [asyncio.ensure_future(a.call(server, "hold", timeout=30)) for _ in range(3)]
        await wait_until(lambda: len(b._procs[server.id].watchers or ()) == 3, 2)
        await a.stop()
        await asyncio.gather(*calls, return_exceptions=True)
        await wait_until(lambda: "a" not in b.nodes(), 5)
        assert not b._procs[server.id].watchers and cross(b, "a") is None
        assert await b.call(server, "release") == 3  # replies to the lost node are dropped


async def test_a_reply_from_another_server_ends_the_monitor(pair: tuple[Node, Node]) -> None:
    a, b = pair
    answerer = await b.start(Answerer)
    server = await b.start(Forwarder, answerer)
    assert await a.call(server, 7) == ("answered", 7)
    assert no_call_state(a, b, server)


async def test_the_call_protocol_by_hand_still_works_across_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    async with a.process() as me:
        ref = a.make_ref()
        a.send(server, ("$gen_call", (me.pid, ref), "by hand"))
        assert await me.receive(timeout=5) == (ref, "by hand")
    assert no_call_state(a, b, server)


async def test_cancelling_a_remote_call_clears_both_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    pending = asyncio.ensure_future(a.call(server, "hold", timeout=30))
    await wait_until(lambda: bool(b._procs[server.id].watchers), 2)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await wait_until(lambda: no_call_state(a, b, server), 2)


# -- send_request: calls in flight from one task ---------------------------------------------


async def test_send_request_pipelines_calls_from_one_task_in_one_envelope_each(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    server = await b.start(app.Counter, 0)
    assert await a.call(server, "increment") == 1
    await asyncio.sleep(0.05)
    b_in = envelopes(b, "a")[0]
    tasks = len(asyncio.all_tasks())
    futures = [a.send_request(server, "increment") for _ in range(2000)]
    assert len(asyncio.all_tasks()) == tasks  # no task per call
    assert await asyncio.gather(*futures) == list(range(2, 2002))  # in order: one server
    assert envelopes(b, "a")[0] - b_in == 2000
    assert no_call_state(a, b, server)


async def test_send_request_fails_its_future_as_call_raises(pair: tuple[Node, Node]) -> None:
    a, b = pair
    dead = b.spawn(app.idle)
    b.exit(dead, "kill")
    await wait_until(lambda: not b.is_alive(dead), 2)
    with pytest.raises(zmesh.NoProc):
        await a.send_request(dead, "anything")
    with pytest.raises(zmesh.NoProc, match="nobody"):
        await a.send_request("nobody", "anything")
    server = await b.start(Holder)
    with pytest.raises(zmesh.CallTimeout):
        await a.send_request(server, "hold", timeout=0.1)
    dying = a.send_request(server, "die")
    with pytest.raises(zmesh.CallError):
        await dying
    await wait_until(lambda: no_call_state(a, b, server), 2)


async def test_cancelling_a_send_request_future_clears_both_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    pending = a.send_request(server, "hold", timeout=30)
    await wait_until(lambda: bool(b._procs[server.id].watchers), 2)
    pending.cancel()
    await wait_until(lambda: no_call_state(a, b, server), 2)
    local = await a.start(Holder)
    held = a.send_request(local, "hold", timeout=30)
    await wait_until(lambda: a._procs[local.id].callers == 1, 2)
    held.cancel()
    await wait_until(lambda: a._procs[local.id].callers == 0 and not a._call_router()._calls, 2)


# -- local calls ---------------------------------------------------------------------------


async def test_local_calls_leave_no_monitor_after_reply_timeout_death_and_cancel(
    local_node: Node,
) -> None:
    node = local_node
    server = await node.start(Holder)
    proc = node._procs[server.id]
    router = node._call_router()
    assert await node.call(server, "x") == "x"
    assert not proc.watchers and proc.callers == 0 and not router._calls and not router.monitors
    with pytest.raises(zmesh.CallTimeout):
        await node.call(server, "hold", timeout=0.05)
    assert not proc.watchers and proc.callers == 0 and not router._calls
    assert await node.call(server, "release") == 1  # the late reply is dropped
    assert router.pending() == 0
    pending = asyncio.ensure_future(node.call(server, "hold", timeout=30))
    await wait_until(lambda: proc.callers == 1, 2)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert not proc.watchers and proc.callers == 0 and not router._calls
    pending = asyncio.ensure_future(node.call(server, "hold", timeout=30))
    await wait_until(lambda: proc.callers == 1, 2)
    node.exit(server, "kill")
    with pytest.raises(zmesh.CallError):
        await asyncio.wait_for(pending, 5)
    assert not router._calls and proc.callers == 0
    with pytest.raises(zmesh.NoProc, match="does not exist"):
        await node.call(server, "x")


class RawForwarder(GenServer):
    """Passes each call on as the call message itself: the other server answers it."""

    async def init(self, to: Pid) -> None:
        self.to = to

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        self.node.send(self.to, (CALL, (caller.pid, caller.ref), request))
        return zmesh.NOREPLY


class Echo(GenServer):
    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        return ("echo", request)


async def test_a_local_call_answered_by_another_server_ends_the_first_ones_monitor(
    local_node: Node,
) -> None:
    node = local_node
    echo = await node.start(Echo)
    forwarder = await node.start(RawForwarder, echo)
    for i in range(3):
        assert await node.call(forwarder, i) == ("echo", i)
    assert node._procs[forwarder.id].callers == 0 and node._procs[echo.id].callers == 0
    assert not node._call_router()._calls


async def test_calls_time_out_in_deadline_order_whatever_the_order_made(local_node: Node) -> None:
    node = local_node
    server = await node.start(Holder)
    loop = asyncio.get_running_loop()
    started = loop.time()
    done: dict[float, float] = {}

    async def timed(timeout: float) -> None:
        with pytest.raises(zmesh.CallTimeout):
            await node.call(server, "hold", timeout=timeout)
        done[timeout] = loop.time() - started

    await asyncio.gather(timed(0.6), timed(0.1), timed(0.3))
    assert done[0.1] < done[0.3] < done[0.6]
    for timeout, took in done.items():
        assert took >= timeout - 0.002  # never early (beyond the loop's clock resolution)
    assert not node._call_router()._calls


# -- hostile input ---------------------------------------------------------------------------


async def test_malformed_call_envelopes_are_refused_and_counted(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = await b.start(Holder)
    assert a._dist is not None
    peer = a._dist.peer("b")
    assert peer is not None
    codec = Codec()
    router = a._call_router().pid.id
    bad = [
        [Kind.CALL, server.id, server.creation, router],  # wrong arity
        [Kind.CALL, server.id, server.creation, router, "not a ref id", 1],
        [Kind.CALL, server.id, server.creation, a._call_router().pid, 1, 1],  # not an id
        [Kind.CALL, "id", [], router, 1, 1],  # no such process, not even an id
        [Kind.CALL_REPLY, 1, 2, "not a ref id", 1],
        [Kind.CALL_REPLY, 1],
    ]
    before = b.stats().get("bad_envelopes", 0)
    payloads = b.stats().get("bad_payloads", 0)
    for env in bad:
        peer.link.enqueue(codec.encode([int(env[0]), *env[1:]]))
    undecodable = [int(Kind.CALL), server.id, server.creation, router, 10**9, b"\xc1"]
    peer.link.enqueue(codec.encode(undecodable))
    await asyncio.sleep(0.1)
    assert b.stats().get("bad_envelopes", 0) - before == len(bad)
    assert b.stats().get("bad_payloads", 0) - payloads == 1
    assert no_call_state(a, b, server)
    assert await a.call(server, "still") == "still"


async def test_a_request_the_server_node_refuses_fails_the_call_not_the_session(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    server = await b.start(Holder)
    with pytest.raises(zmesh.CallError, match="DecodeError"):
        await a.call(server, list(range(1_000_001)), timeout=10)
    assert b.stats()["bad_payloads"] == 1 and a.nodes() == ["b"]
    assert await a.call(server, "after") == "after"
    assert no_call_state(a, b, server)


async def test_a_reply_the_caller_refuses_fails_the_call_not_the_session(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    server = await b.start(Holder)
    with pytest.raises(zmesh.DecodeError):
        await a.call(server, "too long", timeout=10)
    assert a.stats()["bad_payloads"] == 1 and a.nodes() == ["b"]
    assert await a.call(server, "after") == "after"
    assert no_call_state(a, b, server)


# -- the clock ---------------------------------------------------------------------------------


def test_under_virtual_time_a_call_times_out_at_its_virtual_deadline() -> None:
    """The router reads the loop's own clock where the loop keeps its own time (the
    simulation's), not the process's monotonic clock it reads on a plain asyncio loop."""

    async def scenario(sim: Simulation) -> list[float]:
        caller = sim["n1"]
        local = await caller.start(app.Counter, 0)
        remote = await caller.start(app.Counter, 0, on="n2")
        took = []
        for server in (local, remote):
            started = sim.now()
            with pytest.raises(zmesh.CallTimeout):
                await caller.call(server, "hold", timeout=30.0)
            took.append(sim.now() - started)
            assert await caller.call(server, "increment") == 1  # the router still works
        return took

    took = run_simulation(scenario, n=2, load=["zmesh_test_app"])
    assert len(took) == 2 and all(30.0 <= t < 30.1 for t in took), took
