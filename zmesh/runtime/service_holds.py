"""Messages sent by name to a service that is moving or restarting, held in order on the
sending node until the service is registered again.

Two kinds of hold: a move's (`by` names the moving node; it ends when that node says
the move is over, or is lost) and a restart's (`by` None; it ends when the name is
registered to a process other than `old`). Either ends by its deadline at the latest:
held messages then go to whoever holds the name, or are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zmesh.errors import CallTimeout, NoProc, QueueFull
from zmesh.terms import Pid

log = logging.getLogger("zmesh.services")


@dataclass(eq=False)
class Hold:
    old: Pid | None  # the instance being replaced
    by: str | None  # the node moving it; None: waiting for a restart
    deadline: float
    messages: deque[Any] = field(default_factory=deque)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Holds:
    """The holds of one node. `send(pid, message)` delivers a released message;
    `whereis(name)` reads the registry; `limit` caps the messages held per service."""

    def __init__(
        self,
        send: Callable[[Pid, object], None],
        whereis: Callable[[str], Pid | None],
        limit: int,
        counters: Counter[str],
    ) -> None:
        self._send = send
        self._whereis = whereis
        self._limit = limit
        self._counters = counters
        self._holds: dict[str, Hold] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._holds

    def moving(self, name: str) -> bool:
        """Whether a node has announced a move of `name` that is not over yet."""
        hold = self._holds.get(name)
        return hold is not None and hold.by is not None

    def for_move(self, name: str, old: Pid, mover: str, deadline: float) -> None:
        hold = self._holds.get(name)
        if hold is None:
            self._holds[name] = Hold(old, mover, deadline)
        else:
            hold.old, hold.by, hold.deadline = old, mover, deadline

    def hold(self, name: str, message: object, deadline: float) -> None:
        """Hold `message` for `name` (a restart's hold if none is open). QueueFull past
        the limit."""
        hold = self._holds.get(name)
        if hold is None:
            hold = self._holds[name] = Hold(None, None, deadline)
        if len(hold.messages) >= self._limit:
            raise QueueFull(f"{len(hold.messages)} messages held for service {name!r}")
        hold.messages.append(message)
        self._counters["held"] += 1

    async def wait(self, name: str, deadline: float, timeout: float) -> None:
        """Wait until the hold of `name` (opened as a restart's if none is) ends.
        CallTimeout after `timeout`; NoProc if it ends with no service to reach."""
        hold = self._holds.get(name)
        if hold is None:
            hold = self._holds[name] = Hold(None, None, deadline)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        hold.waiters.append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} was not available within {timeout} s") from None

    def registered(self, name: str, pid: Pid | None) -> None:
        """The owner of `name` changed: a restart's hold ends if a new process has it. A
        move's hold waits for its mover, so an instance that took the name during the
        move (a fresh start racing it) has its state before any held message."""
        hold = self._holds.get(name)
        if hold is not None and hold.by is None and pid is not None and pid != hold.old:
            self.release(name, pid)

    def end_move(self, mover: str, names: list[str], deadline: float) -> list[str]:
        """`mover`'s move of `names` is over: release to the new owners those whose new
        owner is known here, keep the others as a restart's hold. Returns the latter."""
        waiting = []
        for name in names:
            hold = self._holds.get(name)
            if hold is None or hold.by != mover:
                continue
            pid = self._whereis(name)
            if pid is not None and pid != hold.old:
                self.release(name, pid)
            else:
                hold.by, hold.deadline = None, deadline
                waiting.append(name)
        return waiting

    def mover_lost(self, mover: str) -> list[str]:
        """`mover` went down mid-move: its holds wait for a restart instead."""
        names = [n for n, h in self._holds.items() if h.by == mover]
        for name in names:
            hold = self._holds[name]
            hold.by, hold.old = None, None
        return names

    def expire(self, now: float) -> None:
        for name, hold in list(self._holds.items()):
            if hold.deadline < now:
                pid = self._whereis(name)
                self.release(name, None if pid == hold.old else pid, expired=True)

    def drop(self, name: str) -> None:
        """The service is gone: its held messages are dropped (counted)."""
        self.release(name, None)

    def release(self, name: str, pid: Pid | None, *, expired: bool = False) -> None:
        """End the hold of `name`: its messages go to `pid` in order (dropped if None)."""
        hold = self._holds.pop(name, None)
        if hold is None:
            return
        if pid is None:
            if hold.messages:
                self._counters["hold_dropped"] += len(hold.messages)
                log.warning("%d messages to service %r dropped", len(hold.messages), name)
        else:
            for message in hold.messages:
                self._send(pid, message)
        for waiter in hold.waiters:
            if not waiter.done():
                if pid is None and expired:
                    waiter.set_exception(NoProc(f"service {name!r} is not running"))
                else:
                    waiter.set_result(None)

    def close(self) -> None:
        """Fail every waiting call; forget every hold."""
        for hold in self._holds.values():
            for waiter in hold.waiters:
                if not waiter.done():
                    waiter.set_exception(NoProc("the node stopped"))
        self._holds.clear()
