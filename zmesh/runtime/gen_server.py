"""GenServer: the generic server engine (OTP's gen_server). Users override the hooks.

Calls and casts are ordinary messages, so they keep per-sender order and work across
nodes unchanged: `("$gen_call", (caller_pid, ref), request)` and
`("$gen_cast", request)`; the reply is `(ref, value)` sent to the caller's pid (see
`CallRouter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from zmesh.errors import CallError, CallTimeout, NoProc, ProcessExited
from zmesh.runtime.process import ExitProcess, Process, _Future
from zmesh.terms import NOCONNECTION, NOPROC, NORMAL, SHUTDOWN, Down, Exit, Pid, Ref, crash_reason

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.gen_server")

CALL: Final = "$gen_call"
CAST: Final = "$gen_cast"
#: A call request the engine answers itself: `handoff()`'s value, then the server stops
#: "shutdown" (how a service moves to another node with its state).
HANDOFF: Final = "$zmesh.handoff"
#: `(STOP, reason)` as a call request: the engine replies None, then the server stops
#: through `terminate(reason)` after the messages queued before it.
STOP: Final = "$zmesh.stop"
#: `(RESTORE, state)` as a call request: the engine runs `restore(state)` and replies
#: None (a moved service's state reaching an instance that had started fresh).
RESTORE: Final = "$zmesh.restore"
#: A call request the engine answers True without the hooks: proof that `init` is done.
PING: Final = "$zmesh.ping"
_ENGINE_TUPLES: Final = (STOP, RESTORE)
_ENGINE_STRS: Final = frozenset((HANDOFF, PING))


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "zmesh.NOREPLY"


#: Return this from `handle_call` to reply later with `self.reply(caller, value)`.
NOREPLY: Final = _NoReply()
#: Types a plain (not async) `handle_call` returns that are surely not awaitable: they
#: skip `asyncio.iscoroutine`, a Python call.
_PLAIN_RESULTS: Final = frozenset(
    (type(None), bool, int, float, str, bytes, tuple, list, dict, set, _NoReply)
)


class Caller(NamedTuple):
    """Who is waiting for a reply: the pid the reply goes to (for `Node.call`, the
    calling node's call router, which hands it to the waiting call) and the call's ref."""

    pid: Pid
    ref: Ref


# `Caller(pid, ref)` without the generated `__new__` (half the cost, once per call).
_new_caller: Final = tuple.__new__
#: `Ref(node, id, creation)` without the generated `__new__` (half the cost).
_new_ref: Final = tuple.__new__


def new_ref(node: str, ref_id: int, creation: int) -> Ref:
    """`Ref(node, ref_id, creation)` at about half the cost (once per call on both sides)."""
    return _new_ref(Ref, (node, ref_id, creation))


class _Stop(Exception):
    def __init__(self, reason: object) -> None:
        self.reason = reason


class GenServer:
    """Base class of a generic server. Override the hooks you need; all may be async.

    - `init(*args)`: set up state; an exception fails `start`.
    - `handle_call(request, caller)`: return the reply, or `NOREPLY` to answer later
      with `self.reply(caller, value)`.
    - `handle_cast(request)`, `handle_info(message)`: no reply.
    - `terminate(reason)`: called when the server stops (a crash, `self.stop`, an exit
      signal it traps, or "shutdown" from its supervisor).
    - `handoff()` / `restore(state)`: for a service (`Node.spawn_service`) that the ring
      moves to another node: the old instance's `handoff()` value (msgpack-able) is
      given to the new instance's `restore`, called after `init`.

    Inside the hooks `self.pid` is the server's pid and `self.node` its `Node`. An
    exception in a hook crashes the server with a reason naming the exception.
    """

    pid: Pid
    node: Node
    process: Process

    async def init(self, *args: Any) -> None:
        """Set up the server's state from the arguments given to `start`."""

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not handle calls ({request!r})")

    async def handle_cast(self, request: Any) -> None:
        log.warning("%s: unhandled cast %r", type(self).__name__, request)

    async def handle_info(self, message: Any) -> None:
        log.warning("%s: unhandled message %r", type(self).__name__, message)

    async def terminate(self, reason: object) -> None:
        """Clean up before the server exits with `reason`."""

    async def handoff(self) -> Any:
        """The state to carry when this service instance moves to another node (None by
        default: the new instance starts from `init` alone). Must be msgpack-able."""
        return None

    async def restore(self, state: Any) -> None:
        """Take over `state` from the instance that ran before on another node; called
        after `init`, only when a moved instance starts."""

    def reply(self, caller: Caller, value: Any) -> None:
        """Answer a call that `handle_call` deferred with `NOREPLY`."""
        reply(self.node, caller.pid, caller.ref, value)

    def stop(self, reason: object = NORMAL) -> None:
        """Stop the server after the current hook returns: `terminate(reason)`, then exit."""
        raise _Stop(reason)


def reply(node: Node, caller: Pid, ref: Ref, value: object) -> None:
    """Send the reply `(ref, value)` of a call to `caller`: straight to this node's call
    router, or as one CALL_REPLY envelope, which ends the call's implicit monitor."""
    if caller.node == node.name:
        router = node._calls
        if router is not None and caller is router.pid:
            router.answer(ref.id, value, None)
        else:
            node.send(caller, (ref, value))
    elif node._dist is not None:
        node._dist.send_reply(caller, ref, value)


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


async def serve(
    proc: Process,
    cls: type[GenServer],
    args: list[Any],
    starter: Pid | None,
    restored: tuple[Any] | None = None,
) -> None:
    """The engine: init (then `restore(restored[0])` if given), acknowledge `starter`,
    then dispatch messages to the hooks.

    `starter` is also the server's parent: an exit signal from it, trapped, stops the
    server through `terminate` (how a supervisor shuts a child down)."""
    server = cls.__new__(cls)
    server.pid = proc.pid
    server.node = proc.node
    server.process = proc
    node = proc.node
    try:
        await _maybe_await(server.init(*args))
        if restored is not None:
            await _maybe_await(server.restore(restored[0]))
    except _Stop as stop:
        if starter is not None:
            node.send(starter, ("$gen_init", proc.pid, False, stop.reason))
        _exit_with(stop.reason)
    except Exception as exc:
        if starter is not None:
            node.send(starter, ("$gen_init", proc.pid, False, crash_reason(exc)))
        raise
    if starter is not None:
        node.send(starter, ("$gen_init", proc.pid, True, None))
    reason: object = NORMAL
    loop = node._loop
    mailbox = proc._mailbox
    if mailbox is None:
        mailbox = proc._mailbox = deque()
    # This node's call router (made by the first call, made again if it was killed): a
    # reply to it is handed over here, without `reply`. Re-read after any other reply.
    router = node._calls
    router_pid = router.pid if router is not None else None
    try:
        while True:
            if not mailbox:
                # `proc.receive()` inlined (the server takes every message in order): one
                # coroutine less per message. `deliver` wakes the waiter; a kill cancels.
                waiter = proc._waiter = _Future(loop=loop)
                await waiter
                continue
            message = mailbox.popleft()
            if type(message) is tuple and len(message) == 3 and message[0] == CALL:
                _, (caller_pid, ref), request = message
                kind = type(request)
                if kind is str:
                    if request in _ENGINE_STRS:
                        await _engine_request(server, request, caller_pid, ref)
                        continue
                elif kind is tuple and request and request[0] in _ENGINE_TUPLES:
                    await _engine_request(server, request, caller_pid, ref)
                    continue
                result: Any = server.handle_call(request, _new_caller(Caller, (caller_pid, ref)))
                kind = type(result)
                if kind is CoroutineType or (
                    kind not in _PLAIN_RESULTS and asyncio.iscoroutine(result)
                ):
                    result = await result
                if result is NOREPLY:
                    continue
                if caller_pid is router_pid:
                    # `reply` and `router.answer` inlined for the usual local call: made
                    # to this very server (not forwarded), still waiting.
                    entry = router._calls.pop(ref.id, None)  # type: ignore[union-attr]
                    if entry is not None:
                        if entry[2] is proc:
                            proc.callers -= 1
                            waiting = entry[0]
                            if not waiting.done():
                                waiting.set_result(result)
                        else:
                            router.settle(entry, result, None)  # type: ignore[union-attr]
                else:
                    reply(node, caller_pid, ref, result)
                    router = node._calls
                    router_pid = router.pid if router is not None else None
            elif type(message) is tuple and len(message) == 2 and message[0] == CAST:
                await _maybe_await(server.handle_cast(message[1]))
            elif type(message) is Exit and message.reason != NORMAL and proc.trap_exit:
                # The parent (a supervisor), or the node itself (node.exit), says stop.
                if message.pid == starter or message.pid == node.system_pid:
                    raise _Stop(message.reason)
                await _maybe_await(server.handle_info(message))
            else:
                await _maybe_await(server.handle_info(message))
    except _Stop as stop:
        reason = stop.reason
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = crash_reason(exc)
        log.error("%s %s crashed: %s", cls.__name__, proc.pid, reason, exc_info=exc)
        await _terminate(server, reason)
        raise
    await _terminate(server, reason)
    _exit_with(reason)


async def _engine_request(server: GenServer, request: Any, caller: Pid, ref: Ref) -> None:
    """Answer a HANDOFF, STOP, RESTORE or PING call; the first two then stop the server.
    Only the server's own node may move, stop or restore it: from elsewhere (a remote
    caller naming an engine request) only PING is answered, the rest refused with None."""
    if request == PING:
        reply(server.node, caller, ref, True)
        return
    if caller.node != server.node.name:
        log.warning("%s: engine request %r from %s refused", server.pid, request, caller)
        reply(server.node, caller, ref, None)
        return
    if request == HANDOFF:
        state = await _maybe_await(server.handoff())
        reply(server.node, caller, ref, state)
        raise _Stop(SHUTDOWN)
    if request[0] == RESTORE:
        await _maybe_await(server.restore(request[1] if len(request) > 1 else None))
        reply(server.node, caller, ref, None)
        return
    reply(server.node, caller, ref, None)
    raise _Stop(request[1] if len(request) > 1 else SHUTDOWN)


async def _terminate(server: GenServer, reason: object) -> None:
    try:
        await _maybe_await(server.terminate(reason))
    except Exception:
        log.exception("%s.terminate failed", type(server).__name__)


def _exit_with(reason: object) -> None:
    if reason != NORMAL:
        raise ExitProcess(reason)


class CallRouter(Process):
    """The node's receiver of call replies: one long-lived pid stands for every caller.

    A call is OTP's alias plus implicit monitor: the request itself makes the server
    watch for the caller under the call's ref (on a local server, a count of the calls
    waiting on it, `Process.callers`; on a remote one, a watcher entry the CALL envelope
    makes on arrival), and the reply ends that watch.
    The reply `(ref, value)` or the server's `Down` finds the waiting call by its ref; a
    reply to a call that timed out finds nothing and is dropped. On timeout (or when the
    waiting task is cancelled) the watch is removed: one DEMONITOR for a remote server.
    Losing the server's node fails its calls ("noconnection"). Timeouts share one timer,
    armed at the earliest deadline. No process is made and torn down per call, and the
    wire carries only the router's and the ref's numbers (both are of the calling node).
    """

    __slots__ = ("_calls", "_clock", "_last_deadline", "_ordered", "_timer", "_timer_at")

    def __init__(self, node: Node, pid: Pid) -> None:
        super().__init__(node, pid)
        self.trap_exit = True  # exit signals (from a server linked to it) are dropped
        #: Calls waiting, by ref id, in the order made.
        self._calls: dict[int, _Call] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # While deadlines only grow with each call (one timeout for all: the usual case),
        # the first waiting calls are the first due, and expiry stops at the first not due.
        self._ordered = True
        self._last_deadline = 0.0
        #: `loop.time`, or the `time.monotonic` it returns on a plain asyncio loop (a
        #: Python call less, twice per call).
        loop = node._loop
        plain = type(loop).time is asyncio.BaseEventLoop.time
        self._clock: Callable[[], float] = time.monotonic if plain else loop.time

    def deliver(self, message: object) -> None:
        if type(message) is tuple and len(message) == 2 and type(message[0]) is Ref:
            ref, node = message[0], self.node
            if ref.node == node.name and ref.creation == node.creation:
                self.answer(ref.id, message[1], None)

    def _down(self, ref: Ref, pid: Pid, reason: object) -> None:
        entry = self._calls.get(ref.id)
        if entry is not None and entry[4] == ref:
            del self._calls[ref.id]
            if not entry[0].done():
                entry[0].set_exception(_call_failed(pid, reason))

    def server_exited(self, server: Process, reason: object) -> None:
        """Fail the calls waiting on the local `server`, which exited with `reason`.

        A local call's implicit monitor is a count on the server (`Process.callers`), not
        a watcher entry per call: the scan here, once per server death with calls
        waiting, is what spares two dict updates of a hashed Ref on every call."""
        failed = [entry for entry in self._calls.values() if entry[2] is server]
        server.callers = 0
        for entry in failed:
            del self._calls[entry[4].id]
            if not entry[0].done():
                entry[0].set_exception(_call_failed(server.pid, reason))

    def node_lost(self, name: str) -> None:
        """Fail every call to a server on node `name` ("noconnection")."""
        lost = [e for e in self._calls.values() if type(e[2]) is Pid and e[2].node == name]
        for entry in lost:
            del self._calls[entry[4].id]
            if not entry[0].done():
                entry[0].set_exception(_call_failed(entry[2], NOCONNECTION))  # type: ignore[arg-type]

    def fail(self, ref_id: int, error: BaseException, via: str | None) -> None:
        """Fail the call with ref id `ref_id` with `error` (its reply was unreadable)."""
        entry = self._calls.pop(ref_id, None)
        if entry is not None:
            self._forget(entry, via)
            if not entry[0].done():
                entry[0].set_exception(error)

    def answer(self, ref_id: int, value: object, via: str | None) -> None:
        """Hand `value` to the call with ref id `ref_id` (dropped if it is no longer
        waiting); `via` is the node the reply came from (None: a local or plain message),
        see `call_done`."""
        entry = self._calls.pop(ref_id, None)
        if entry is not None:
            self.settle(entry, value, via)

    def settle(self, entry: _Call, value: object, via: str | None) -> None:
        """Hand `value` to the call `entry`, taken out of the waiting calls."""
        server = entry[2]
        if type(server) is not Pid:
            server.callers -= 1  # type: ignore[union-attr]
        elif via != server.node:  # a reply from the server's node ended its monitor there
            self._forget(entry, via)
        waiting = entry[0]
        if not waiting.done():
            waiting.set_result(value)

    def _forget(self, entry: _Call, via: str | None) -> None:
        """End the implicit monitor of a call that ends other than by its server's death."""
        server, ref = entry[2], entry[4]
        if type(server) is Pid:
            dist = self.node._dist
            if dist is not None:
                dist.call_done(ref, self.pid, server, via)
        else:
            server.callers -= 1  # type: ignore[union-attr]

    def _abort_receive(self, reason: object) -> None:
        calls, self._calls = self._calls, {}
        for entry in calls.values():
            self._forget(entry, None)
            if not entry[0].done():
                entry[0].set_exception(ProcessExited(reason))

    async def call(self, target: Pid, request: Any, timeout: float) -> Any:
        """Send `request` to the GenServer `target` and wait for its reply (see
        `Node.call` for what it raises)."""
        node = self.node
        # `node.make_ref()` inlined: half the cost, once per call.
        ref = _new_ref(Ref, (node.name, ref_id := next(node._refs), node.creation))
        # `_send` inlined (a call less per call), with `local.deliver` for a plain
        # server's process whose mailbox exists (it has taken a message).
        server: Process | Pid
        if target.node == node.name:
            local = node._procs.get(target.id) if target.creation == node.creation else None
            if local is None:
                raise _call_failed(target, NOPROC)
            local.callers += 1  # the implicit monitor (see `server_exited`)
            mailbox = local._mailbox
            if mailbox is not None and type(local) is Process:
                mailbox.append((CALL, (self.pid, ref), request))
                local.received += 1
                wake = local._waiter
                if wake is not None:
                    local._waiter = None
                    if not wake.done():
                        wake.set_result(True)
            else:
                local.deliver((CALL, (self.pid, ref), request))
            server = local
        else:
            dist = node._dist
            failed = dist.send_call(self.pid, ref, target, request) if dist else NOCONNECTION
            if failed is not None:
                raise _call_failed(target, failed)
            server = target
        waiting: asyncio.Future[Any] = _Future(loop=node._loop)
        deadline = self._clock() + timeout
        calls = self._calls
        if not calls:
            self._ordered = True
        elif deadline < self._last_deadline:
            self._ordered = False
        calls[ref_id] = (waiting, deadline, server, timeout, ref)
        self._last_deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        try:
            return await waiting
        except BaseException:
            # Cancelled while waiting: the call is abandoned, its monitor with it.
            self._abandon(ref_id)
            raise

    def request(self, target: Pid, request: Any, timeout: float) -> asyncio.Future[Any]:
        """Send `request` to the GenServer `target` now; the future of its reply (OTP's
        `gen_server:send_request`). It fails as `call` raises; cancelling it abandons
        the call. No coroutine or task per call: many can be in flight from one task."""
        node = self.node
        ref = new_ref(node.name, next(node._refs), node.creation)
        try:
            waiting = self._send(target, request, timeout, node._loop.time(), ref)
        except NoProc as exc:
            waiting = node._loop.create_future()
            waiting.set_exception(exc)
            return waiting
        ref_id = ref.id

        def abandon_if_cancelled(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                self._abandon(ref_id)

        waiting.add_done_callback(abandon_if_cancelled)
        return waiting

    def _abandon(self, ref_id: int) -> None:
        """Drop a waiting call whose caller gave up, and its implicit monitor."""
        entry = self._calls.pop(ref_id, None)
        if entry is not None:
            self._forget(entry, None)

    def _send(
        self, target: Pid, request: Any, timeout: float, started: float, ref: Ref
    ) -> asyncio.Future[Any]:
        """Deliver the call (with its implicit monitor) and register it: its future.
        Raises NoProc if it cannot be delivered."""
        node = self.node
        server: Process | Pid
        if target.node == node.name:
            local = node._procs.get(target.id) if target.creation == node.creation else None
            if local is None:
                raise _call_failed(target, NOPROC)
            server = local
            local.callers += 1  # the implicit monitor (see `server_exited`)
            local.deliver((CALL, (self.pid, ref), request))
        else:
            dist = node._dist
            failed = dist.send_call(self.pid, ref, target, request) if dist else NOCONNECTION
            if failed is not None:
                raise _call_failed(target, failed)
            server = target
        waiting: asyncio.Future[Any] = _Future(loop=node._loop)
        deadline = started + timeout
        calls = self._calls
        if not calls:
            self._ordered = True
        elif deadline < self._last_deadline:
            self._ordered = False
        calls[ref.id] = (waiting, deadline, server, timeout, ref)
        self._last_deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return waiting

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.node._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail every call past its deadline with CallTimeout; re-arm for the next."""
        self._timer = None
        now = self.node._loop.time()
        due: list[_Call] = []
        next_at: float | None = None
        ordered = self._ordered
        for entry in self._calls.values():
            deadline = entry[1]
            if deadline <= now:
                due.append(entry)
            elif ordered:
                next_at = deadline
                break
            elif next_at is None or deadline < next_at:
                next_at = deadline
        for entry in due:
            waiting, _, server, timeout, ref = entry
            del self._calls[ref.id]
            self._forget(entry, None)
            if not waiting.done():
                pid = server if type(server) is Pid else server.pid  # type: ignore[union-attr]
                waiting.set_exception(CallTimeout(f"{pid} did not reply within {timeout} s"))
        if next_at is not None:
            # Out of order, a burst of deadlines is taken a millisecond at a time.
            self._arm(next_at if ordered else max(next_at, now + 0.001))


#: A waiting call: its future, deadline, server (the Process if local, else the Pid),
#: timeout and ref.
_Call = tuple["asyncio.Future[Any]", float, "Process | Pid", float, Ref]


def _call_failed(target: Pid, reason: object) -> NoProc:
    if reason in ("noproc", "noconnection"):
        what = "does not exist" if reason == "noproc" else "is on a node that was lost"
        return NoProc(f"{target} {what}")
    return CallError(target, reason)


def started_or_down(pid: Pid, ref: Ref) -> Callable[[object], bool]:
    """A `receive` match for a starter: the `("$gen_init", pid, ok, reason)` ack that
    `serve` sends once `init` is done (or failed), or the `Down` of monitor `ref` if
    the server died first."""

    def match(m: object) -> bool:
        return (type(m) is tuple and len(m) == 4 and m[0] == "$gen_init" and m[1] == pid) or (
            type(m) is Down and m.ref == ref
        )

    return match


def is_server(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, GenServer)
