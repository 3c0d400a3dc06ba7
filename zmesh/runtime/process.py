"""A process: a pid, a mailbox and selective receive. The node owns its lifecycle."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from zmesh.errors import ProcessExited, ReceiveTimeout
from zmesh.terms import Down, Pid, Ref

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

Match = Callable[[Any], bool] | type | tuple[type, ...]
#: Made directly, not by `loop.create_future()`: a Python call less per wait.
_Future: Final = asyncio.Future


class Process:
    """A lightweight process: its own mailbox, links, monitors and exit-trapping flag.

    Created by `Node.spawn` (a task of its own) or `Node.process()` (a mailbox for
    the calling task). Messages from one sender arrive in the order sent.
    """

    __slots__ = (
        "_exit_reason",
        "_mailbox",
        "_task",
        "_waiter",
        "callers",
        "links",
        "monitors",
        "node",
        "pid",
        "received",
        "trap_exit",
        "watchers",
    )

    def __init__(self, node: Node, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self.trap_exit = False
        self.received = 0  # messages delivered so far (inspection's "reductions")
        # Lazily created: an empty deque costs ~600 B, a third of an idle process.
        self._mailbox: deque[Any] | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._exit_reason: object = None
        self.links: set[Pid] | None = None
        self.monitors: dict[Ref, Pid] | None = None  # monitors this process holds
        self.watchers: dict[Ref, Pid] | None = None  # monitors held on this process
        #: Local calls waiting for this process's reply (each an implicit monitor that
        #: the node's call router keeps: see `CallRouter.server_exited`).
        self.callers = 0

    def __call__(self, task: asyncio.Task[Any]) -> None:
        # The process is its own task's done-callback: no closure allocated per spawn.
        self.node._on_task_done(self, task)

    def __repr__(self) -> str:
        state = "alive" if self._exit_reason is None else f"exited {self._exit_reason!r}"
        return f"<Process {self.pid} {state}>"

    @property
    def alive(self) -> bool:
        return self._exit_reason is None

    # -- mailbox ------------------------------------------------------------------

    def deliver(self, message: object) -> None:
        """Append `message` to the mailbox and wake a waiting `receive`."""
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        mailbox.append(message)
        self.received += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)

    async def receive(self, match: Match | None = None, *, timeout: float | None = None) -> Any:
        """Remove and return the first message that `match` accepts (any message if None).

        `match` is a predicate, a type or a tuple of types. Messages it skips keep their
        order. Raises `ReceiveTimeout` after `timeout` seconds (0 polls), and
        `ProcessExited` if an exit signal takes this process down while it waits.
        """
        if self._exit_reason is not None:
            raise ProcessExited(self._exit_reason)
        mailbox = self._mailbox
        if match is None:
            if mailbox:
                return mailbox.popleft()  # the common case, without the set-up below
            if timeout is None:
                # The next message, however long it takes: no match, no timer.
                try:
                    while True:
                        waiter = self._waiter = _Future(loop=self.node._loop)
                        await waiter  # set by `deliver`; ProcessExited by `_abort_receive`
                        mailbox = self._mailbox
                        if mailbox:
                            return mailbox.popleft()
                finally:
                    self._waiter = None
        if (match is not None and not callable(match)) or isinstance(match, type):
            kinds = match
            match = lambda m: isinstance(m, kinds)  # noqa: E731
        scanned = 0
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                mailbox = self._mailbox
                if mailbox:
                    if match is None:
                        return mailbox.popleft()
                    for index, message in enumerate(islice(mailbox, scanned, None), scanned):
                        if match(message):
                            del mailbox[index]
                            return message
                    scanned = len(mailbox)
                loop = self.node._loop
                waiter = self._waiter = loop.create_future()
                if timeout is not None and timer is None:
                    if timeout <= 0:
                        raise ReceiveTimeout("no matching message (poll)")
                    timer = loop.call_later(timeout, _expire, waiter)
                if not await waiter:
                    raise ReceiveTimeout(f"no matching message within {timeout} s")
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    def _down(self, ref: Ref, pid: Pid, reason: object) -> None:
        """The monitor `ref` of `pid` fired: deliver `Down` if this process still holds it."""
        monitors = self.monitors
        if monitors is not None and monitors.pop(ref, None) is not None:
            self.deliver(Down(ref, pid, reason))

    def _abort_receive(self, reason: object) -> None:
        """Fail a pending `receive` with ProcessExited (the process was taken down)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ProcessExited(reason))

    def pending(self) -> int:
        """Number of messages waiting in the mailbox."""
        return len(self._mailbox) if self._mailbox else 0

    # -- signals (delegated to the node, which owns the cross-process state) -----------

    def send(self, dest: Pid | str, message: object) -> None:
        """Send `message` to a pid or a registered name (see `Node.send`)."""
        self.node.send(dest, message)

    def link(self, pid: Pid) -> None:
        """Link to `pid`: when either exits abnormally, the other gets an exit signal."""
        self.node._link(self, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove a link to `pid` (no effect if there is none)."""
        self.node._unlink(self, pid)

    def monitor(self, pid: Pid) -> Ref:
        """Monitor `pid`: a `Down(ref, pid, reason)` arrives when it exits ("noproc" if dead)."""
        return self.node._monitor(self, pid)

    def demonitor(self, ref: Ref) -> None:
        """Cancel a monitor; a `Down` for it that is not yet received stays in the mailbox."""
        self.node._demonitor(self, ref)

    def exit(self, pid: Pid, reason: object) -> None:
        """Send an exit signal to `pid` from this process (see `Node.exit`)."""
        self.node._send_exit(self.pid, pid, reason, linked=False)

    def spawn_link(self, fn: Callable[..., Any], *args: Any) -> Pid:
        """Spawn `fn(proc, *args)` on this node, linked to this process."""
        pid = self.node.spawn(fn, *args)
        self.link(pid)
        return pid


class ExitProcess(Exception):
    """Raise inside a process to exit with exactly `reason` (Erlang's `exit(Reason)`):
    no crash report, and links and monitors see `reason` itself."""

    def __init__(self, reason: object) -> None:
        super().__init__(reason)
        self.reason = reason


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
