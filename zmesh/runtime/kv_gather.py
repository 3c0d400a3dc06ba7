"""Fan-out for the partitioned store: one read or write sent to several replicas, their
answers gathered by id (no task per replica, no timer per operation: one future each,
and one sweep every `SWEEP_EVERY` s while any operation waits).

An operation is *ready* (its future resolves) as soon as `on_answer` says so, which is
when a quorum has answered; it *ends* when every node asked has answered or is known
lost, or at the timeout, and then runs `on_end` (a read repairs the replicas behind
there, after the caller has its value). An operation may keep *spare* nodes, asked
only if one asked is lost, if every one asked answered without the operation being
ready, or if it is not ready after `after` seconds (a read asks `r` replicas, and the
others only then).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["SWEEP_EVERY", "Fanout", "Gather"]

#: Seconds between two checks of the waiting operations' timeouts and spare delays.
SWEEP_EVERY = 0.01

#: `on_answer(node, payload)`: record one answer; True once the operation is ready.
OnAnswer = Callable[[str, Any], bool]


def _ignore(node: str, payload: Any) -> bool:
    return False


class Gather:
    """The answers still expected for one operation."""

    __slots__ = (
        "_fanout",
        "ask",
        "deadline",
        "expected",
        "future",
        "on_answer",
        "on_end",
        "on_ready",
        "op",
        "spare",
        "spare_at",
        "started",
    )

    def __init__(
        self,
        fanout: Fanout,
        op: int,
        expected: set[str],
        on_answer: OnAnswer,
        on_end: Callable[[], None] | None,
        timeout: float,
    ) -> None:
        self._fanout = fanout
        self.op = op
        self.future: asyncio.Future[None] = fanout.loop.create_future()
        self.expected = expected
        self.on_answer = on_answer
        self.on_end = on_end
        # Run once when the future resolves, without a loop callback as the future's
        # own done-callbacks take (a put forwarded here answers in the same turn).
        self.on_ready: Callable[[], None] | None = None
        self.spare: list[str] = []
        self.spare_at = 0.0
        self.ask: Callable[[str], None] | None = None
        self.started = fanout.loop.time()
        self.deadline = self.started + timeout

    def keep_spare(self, spare: list[str], ask: Callable[[str], None], after: float) -> None:
        """Ask `spare` with `ask(node)` if a node asked is lost, or if not ready
        within `after` s or four times the typical time to ready, whichever is later
        (under a pipelined load the typical time grows, and a spare asked only
        because of the queue is work for nothing)."""
        self.spare = spare
        self.ask = ask
        typical = 4 * self._fanout.typical
        if after < self._fanout.horizon:
            self._fanout.horizon = after
        self.spare_at = self.started + (typical if typical > after else after)

    def tick(self, now: float) -> None:
        """The sweep: ask the spares when due, end at the deadline."""
        if self.spare and now >= self.spare_at:
            self.widen()
        if now >= self.deadline:
            self.end()

    def widen(self) -> None:
        """Ask the spare nodes now, unless the operation is ready already."""
        spare, self.spare = self.spare, []
        if self.future.done() or self.ask is None:
            return
        for node in spare:
            self.expected.add(node)
            self.ask(node)

    def add(self, sender: str, payload: Any) -> None:
        if sender in self.expected:
            self.expected.discard(sender)
            if self.on_answer(sender, payload):
                if not self.future.done():
                    self.future.set_result(None)
                    f = self._fanout  # `observe`, inline: every operation runs it
                    f.typical += (f.loop.time() - self.started - f.typical) / 16
                    if self.on_ready is not None:
                        self._ready()
            elif not self.expected:
                self.widen()  # every node asked answered, and not enough: the spares
            if not self.expected:
                self.end()

    def lost(self, node: str) -> None:
        if node in self.spare:
            self.spare.remove(node)
        if node in self.expected:
            self.expected.discard(node)
            self.widen()
            if not self.expected:
                self.end()

    def end(self) -> None:
        """Every answer is in (or lost, or the timeout): resolve, forget, run `on_end`."""
        if self.on_answer is _ignore:
            return  # ended already
        self._fanout.waiting.pop(self.op, None)
        ready = not self.future.done()
        if ready:
            self.future.set_result(None)
        on_end, self.on_end = self.on_end, None
        self.on_answer = _ignore  # the closures refer back to this gather: no cycles
        self.ask = None
        self.spare = []
        if ready and self.on_ready is not None:
            self._ready()
        self.on_ready = None
        if on_end is not None:
            on_end()

    def _ready(self) -> None:
        hook, self.on_ready = self.on_ready, None
        assert hook is not None
        hook()


class Fanout:
    """The operations of one store waiting for answers, by id."""

    def __init__(self) -> None:
        self.waiting: dict[int, Gather] = {}
        self._ids = itertools.count(1)
        self.loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        self.typical = 0.0  # seconds from start to ready, a moving average
        # No operation needs the sweep sooner than this after its start (the shortest
        # timeout or spare delay seen): the sweep looks only at the ones that old.
        self.horizon = float("inf")

    def start(
        self,
        expected: set[str],
        on_answer: OnAnswer,
        timeout: float,
        on_end: Callable[[], None] | None = None,
    ) -> Gather:
        """A new operation expecting answers from `expected` (its id is `.op`)."""
        op = next(self._ids)
        if timeout < self.horizon:
            self.horizon = timeout
        g = self.waiting[op] = Gather(self, op, expected, on_answer, on_end, timeout)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)
        return g

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        # `waiting` is in start order: past the first one too young to be due, none is.
        oldest = now - self.horizon
        due = []
        for g in self.waiting.values():
            if g.started > oldest:
                break
            due.append(g)
        for g in due:
            g.tick(now)
        if self.waiting:
            self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def on_down(self, node: str) -> None:
        for g in list(self.waiting.values()):
            g.lost(node)
