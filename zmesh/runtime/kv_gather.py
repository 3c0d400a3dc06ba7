"""Fan-out for the partitioned store: one read or write sent to several replicas as
casts, their answers gathered by id (no task or timer per replica: one future and
one timer per operation, which is what made a `get` cost about one remote call)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

__all__ = ["Fanout", "Gather"]


class Gather:
    """The answers of `targets` to one operation: done when `need` have answered
    (or, with `need` None, all of them), when the rest are known lost, or at the
    timeout; `answers` holds ``(node, payload)`` in arrival order."""

    __slots__ = ("answers", "expected", "future", "need", "timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, targets: set[str], need: int | None, timeout: float
    ) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.expected = set(targets)
        self.need = need
        self.answers: list[tuple[str, Any]] = []
        self.timer = loop.call_later(timeout, self.finish)
        self._check()

    def add(self, sender: str, payload: Any) -> None:
        if sender in self.expected:
            self.expected.discard(sender)
            self.answers.append((sender, payload))
            self._check()

    def lost(self, node: str) -> None:
        if node in self.expected:
            self.expected.discard(node)
            self._check()

    def _check(self) -> None:
        if not self.expected or (self.need is not None and len(self.answers) >= self.need):
            self.finish()

    def finish(self) -> None:
        self.timer.cancel()
        if not self.future.done():
            self.future.set_result(None)


class Fanout:
    """The operations of one store waiting for answers, by id."""

    def __init__(self) -> None:
        self.waiting: dict[int, Gather] = {}
        self._ids = itertools.count(1)

    async def gather(
        self, send: Any, targets: set[str], need: int | None, timeout: float
    ) -> list[tuple[str, Any]]:
        """Call `send(id)` to cast the requests, then wait for the answers."""
        op = next(self._ids)
        g = Gather(asyncio.get_running_loop(), targets, need, timeout)
        self.waiting[op] = g
        try:
            send(op)
            await g.future
            return list(g.answers)
        finally:
            del self.waiting[op]
            g.timer.cancel()

    def on_reply(self, sender: str, op: Any, payload: Any) -> None:
        g = self.waiting.get(op) if type(op) is int else None
        if g is not None:
            g.add(sender, payload)

    def on_down(self, node: str) -> None:
        for g in list(self.waiting.values()):
            g.lost(node)
