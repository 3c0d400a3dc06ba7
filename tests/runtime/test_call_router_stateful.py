"""A RuleBasedStateMachine makes local calls with mixed timeouts, answers, cancels and
kills servers at random, and checks the call router's bookkeeping against the calls
still waiting: one entry per waiting call and a count of them on its server (the
implicit monitor, no watcher entry), a timer armed no later than
the earliest deadline (1 ms when deadlines come out of order), and nothing left once
every call has ended.

Bounded: 25 examples of at most 15 steps (`settings` below).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import zmesh
from zmesh import GenServer, Node


class Holder(GenServer):
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
        return request


class CallRouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.node = Node("calls", listen=None)
        self.run(self.node.boot())
        self.servers = [self.run(self.node.start(Holder)) for _ in range(2)]
        self.calls: list[asyncio.Task[Any]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    def settle(self) -> None:
        self.run(asyncio.sleep(0.002))

    @rule(server=st.integers(0, 1), timeout=st.sampled_from([0.005, 0.02, 0.05, 5.0]))
    def call_that_waits(self, server: int, timeout: float) -> None:
        call = self.node.call(self.servers[server], "hold", timeout=timeout)
        self.calls.append(self.loop.create_task(call))
        self.settle()

    @rule(server=st.integers(0, 1), value=st.integers())
    def call_answered(self, server: int, value: int) -> None:
        pid = self.servers[server]
        if self.node.is_alive(pid):
            assert self.run(self.node.call(pid, value)) == value

    @rule(server=st.integers(0, 1))
    def release(self, server: int) -> None:
        pid = self.servers[server]
        if self.node.is_alive(pid):
            self.run(self.node.call(pid, "release"))
        self.settle()

    @rule(which=st.integers(0, 100))
    def cancel(self, which: int) -> None:
        waiting = [c for c in self.calls if not c.done()]  # no precondition: it is timing
        if waiting:
            waiting[which % len(waiting)].cancel()
        self.settle()

    @rule(server=st.integers(0, 1))
    def kill_and_replace(self, server: int) -> None:
        self.node.exit(self.servers[server], "kill")
        self.settle()
        self.servers[server] = self.run(self.node.start(Holder))

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.03]))
    def wait(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    @invariant()
    def one_entry_and_one_implicit_monitor_per_waiting_call(self) -> None:
        router = self.node._call_router()
        # An entry leaves when its call is answered, fails or times out, in the same
        # step as its future is resolved; the task itself may resume a step later.
        assert all(not entry[0].done() for entry in router._calls.values())
        assert len(router._calls) <= sum(not c.done() for c in self.calls)
        for pid in self.servers:
            proc = self.node._procs.get(pid.id)
            if proc is not None:
                waiting = sum(entry[2] is proc for entry in router._calls.values())
                assert proc.callers == waiting and not proc.watchers

    @invariant()
    def a_timer_covers_the_earliest_deadline(self) -> None:
        router = self.node._call_router()
        if router._calls:
            earliest = min(entry[1] for entry in router._calls.values())
            # Out of deadline order, expiry takes a burst a millisecond at a time.
            assert router._timer is not None and router._timer_at <= earliest + 0.001

    @invariant()
    def every_ended_call_ended_as_a_call_may(self) -> None:
        for call in self.calls:
            if call.done() and not call.cancelled():
                error = call.exception()
                if error is None:
                    assert call.result() == "released"
                else:
                    assert isinstance(error, zmesh.CallTimeout | zmesh.CallError), error

    def teardown(self) -> None:
        for call in self.calls:
            call.cancel()
        self.settle()
        router = self.node._call_router()
        assert not router._calls
        for pid in self.servers:
            proc = self.node._procs.get(pid.id)
            assert proc is None or (not proc.watchers and proc.callers == 0)
        self.run(self.node.stop())
        self.loop.close()


CallRouterMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None
)
test_call_router = CallRouterMachine.TestCase
