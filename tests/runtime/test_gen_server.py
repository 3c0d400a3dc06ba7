"""GenServer: calls, casts, deferred replies, timeouts, crashes, remote servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import Down, GenServer, Node
from zmesh.testing import wait_until


class Deferred(GenServer):
    async def init(self) -> None:
        self.waiting: list[zmesh.Caller] = []

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "wait":
            self.waiting.append(caller)
            return zmesh.NOREPLY
        if request == "release":
            for waiter in self.waiting:
                self.reply(waiter, "released")
            return len(self.waiting)
        if request == "slow":
            await asyncio.sleep(0.3)
            return "late"
        if request == "stop":
            self.stop("asked")
        return None

    async def handle_info(self, message: Any) -> None:
        self.info = message


class FailingInit(GenServer):
    async def init(self) -> None:
        raise ValueError("bad config")


class Recorder(GenServer):
    async def init(self, sink: zmesh.Pid) -> None:
        self.sink = sink

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        return request

    async def handle_info(self, message: Any) -> None:
        self.node.send(self.sink, ("info", message))

    async def terminate(self, reason: object) -> None:
        self.node.send(self.sink, ("terminate", reason))


async def test_counter_from_the_contract(local_node: Node) -> None:
    pid = await local_node.start(app.Counter, 0)
    assert await local_node.call(pid, "increment") == 1
    assert await local_node.call(pid, "increment") == 2
    local_node.cast(pid, "reset")
    assert await local_node.call(pid, "get") == 0


async def test_self_pid_and_node_inside_a_server(local_node: Node) -> None:
    pid = await local_node.start(app.Counter)
    assert await local_node.call(pid, "where") == "local"


async def test_deferred_reply_arrives_through_the_caller_handle(local_node: Node) -> None:
    pid = await local_node.start(Deferred)
    waiting = asyncio.ensure_future(local_node.call(pid, "wait"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert await local_node.call(pid, "release") == 1
    assert await waiting == "released"


async def test_call_timeout_is_a_timeout_error_and_late_replies_are_discarded(
    local_node: Node,
) -> None:
    pid = await local_node.start(Deferred)
    with pytest.raises(zmesh.CallTimeout):
        await local_node.call(pid, "slow", timeout=0.05)
    assert issubclass(zmesh.CallTimeout, TimeoutError)
    await asyncio.sleep(0.35)  # the late reply reached the call router after the call gave up
    assert await local_node.call(pid, "anything") is None
    assert all(p == pid for p in local_node.processes())
    assert local_node._call_router().pending() == 0  # dropped, not kept in a mailbox


class Unruly(GenServer):
    """Replies to deferred calls in reverse order, and can turn on its callers."""

    async def init(self) -> None:
        self.waiting: list[tuple[zmesh.Caller, Any]] = []

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "flush":
            for waiter, value in reversed(self.waiting):
                self.reply(waiter, value)
            self.waiting.clear()
            return "flushed"
        if request == "link and crash":
            self.process.link(caller.pid)
            raise RuntimeError("crashing with a linked caller")
        if request == "kill the caller":
            self.node.exit(caller.pid, "kill")
            return zmesh.NOREPLY
        self.waiting.append((caller, request))
        return zmesh.NOREPLY


async def test_concurrent_calls_each_get_their_own_reply(local_node: Node) -> None:
    pid = await local_node.start(Unruly)
    calls = [asyncio.ensure_future(local_node.call(pid, i)) for i in range(200)]
    await asyncio.sleep(0.05)
    assert await local_node.call(pid, "flush") == "flushed"
    assert await asyncio.gather(*calls) == list(range(200))


async def test_callers_survive_what_a_server_does_to_the_caller_pid(local_node: Node) -> None:
    """Callers share the node's call router; a server that links to it and crashes, or
    kills it, fails only the calls in flight: later calls work."""
    pid = await local_node.start(Unruly)
    with pytest.raises(zmesh.CallError, match="RuntimeError"):
        await local_node.call(pid, "link and crash")
    pid = await local_node.start(Unruly)
    waiting = asyncio.ensure_future(local_node.call(pid, "pending"))
    await asyncio.sleep(0.01)
    with pytest.raises(zmesh.ProcessExited):
        await local_node.call(pid, "kill the caller")
    with pytest.raises(zmesh.ProcessExited):
        await waiting
    later = asyncio.ensure_future(local_node.call(pid, "later"))
    await asyncio.sleep(0.01)
    assert await local_node.call(pid, "flush") == "flushed"
    assert await later == "later"
    assert local_node.processes() == [pid]


async def test_call_to_a_dead_pid_or_unknown_name_raises_noproc(local_node: Node) -> None:
    pid = await local_node.start(app.Counter)
    local_node.exit(pid, "kill")
    with pytest.raises(zmesh.NoProc):
        await local_node.call(pid, "get", timeout=1)
    with pytest.raises(zmesh.NoProc):
        await local_node.call("no-such-name", "get", timeout=1)


async def test_exception_in_handle_call_crashes_the_server_and_fails_the_caller(
    local_node: Node,
) -> None:
    pid = await local_node.start(app.Counter)
    async with local_node.process() as me:
        ref = me.monitor(pid)
        with pytest.raises(zmesh.CallError) as info:
            await local_node.call(pid, "crash", timeout=5)
        assert "RuntimeError: asked to crash" in str(info.value.reason)
        assert isinstance(info.value, zmesh.NoProc)
        assert await me.receive(timeout=1) == Down(ref, pid, "RuntimeError: asked to crash")


async def test_failing_init_fails_start_with_the_reason(local_node: Node) -> None:
    with pytest.raises(zmesh.CallError, match="ValueError: bad config"):
        await local_node.start(FailingInit)
    assert local_node.processes() == []


async def test_stop_calls_terminate_and_exits_with_the_reason(local_node: Node) -> None:
    async with local_node.process() as me:
        pid = await local_node.start(Recorder, me.pid)
        ref = me.monitor(pid)
        local_node.send(pid, "hello")
        assert await me.receive(timeout=1) == ("info", "hello")
        local_node.exit(pid, "kill")
        assert await me.receive(timeout=1) == Down(ref, pid, "killed")
    pid = await local_node.start(Deferred)
    async with local_node.process() as me:
        ref = me.monitor(pid)
        with pytest.raises(zmesh.CallError):
            await local_node.call(pid, "stop")
        assert await me.receive(timeout=1) == Down(ref, pid, "asked")


async def test_start_refuses_what_is_not_a_gen_server(local_node: Node) -> None:
    with pytest.raises(zmesh.ConfigError, match="GenServer"):
        await local_node.start(int)  # type: ignore[arg-type]


async def test_remote_start_and_call(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    a._dist.load = frozenset({"zmesh_test_app"})
    pid = await b.start(app.Counter, 10, on="a")
    assert pid.node == "a"
    assert await b.call(pid, "increment") == 11
    assert await b.call(pid, "where") == "a"
    b.cast(pid, "reset")
    assert await b.call(pid, "get") == 0


async def test_remote_call_raises_noproc_when_the_node_is_lost() -> None:
    config = zmesh.NodeConfig(tick=0.1, down_after=0.5)
    async with Node("caller", cookie="c", config=config) as caller:
        server_node = Node("server", cookie="c", config=config, load=["zmesh_test_app"])
        await server_node.boot()
        await caller.connect(server_node.address)  # type: ignore[arg-type]
        pid = await caller.start("zmesh_test_app:Counter", on="server")
        pending = asyncio.ensure_future(caller.call(pid, "hold", timeout=10))
        await asyncio.sleep(0.05)
        await server_node.stop()
        with pytest.raises(zmesh.NoProc):
            await pending


async def test_remote_start_of_an_unloaded_module_is_refused(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _a, b = two_nodes
    with pytest.raises(zmesh.RemoteError, match="not loaded"):
        await b.start(app.Counter, on="a")


async def test_remote_calls_leave_no_monitor_behind_on_either_node(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    pid = await b.start(app.Counter, 0)
    replies = await asyncio.gather(*(a.call(pid, "increment") for _ in range(2000)))
    assert sorted(replies) == list(range(1, 2001))
    with pytest.raises(zmesh.CallTimeout):  # a timed-out call cleans up too
        await a.call(await b.start(Deferred), "slow", timeout=0.05)
    server = b._procs[pid.id]
    await wait_until(lambda: not server.watchers and not b._dist._signals._cross["a"].watchers, 2)
    router = a._call_router()
    a_cross = a._dist._signals._cross.get("b")  # a call leaves none on the caller's node
    assert not router.monitors and not router._calls and (a_cross is None or not a_cross.monitors)


class PlainHooks(GenServer):
    """Hooks that are plain functions: a value is the reply; a coroutine is awaited."""

    def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "later":
            return self.later()
        if request == "defer":
            self.reply(caller, "deferred")
            return zmesh.NOREPLY
        return request

    async def later(self) -> str:
        await asyncio.sleep(0)
        return "awaited"


async def test_plain_handle_call_replies_with_its_value_and_awaits_a_coroutine(
    local_node: Node,
) -> None:
    pid = await local_node.start(PlainHooks)
    for value in (None, True, 3, 2.5, "s", b"b", (1, 2), [1], {"k": 1}, {1}):
        assert await local_node.call(pid, ("echo", value)) == ("echo", value)
        assert await local_node.call(pid, value) == value
    assert await local_node.call(pid, "later") == "awaited"
    assert await local_node.call(pid, "defer") == "deferred"
