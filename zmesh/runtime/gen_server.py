"""GenServer: the generic server engine (OTP's gen_server). Users override the hooks.

Calls and casts are ordinary messages, so they keep per-sender order and work across
nodes unchanged: `("$gen_call", (caller_pid, ref), request)` and
`("$gen_cast", request)`; the reply is `(ref, value)` sent to the caller's pid (see
`CallRouter`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from zmesh.errors import CallError, CallTimeout, NoProc, ProcessExited
from zmesh.runtime.process import ExitProcess, Process
from zmesh.terms import NORMAL, SHUTDOWN, Down, Exit, Pid, Ref, crash_reason

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
_ENGINE_STRS: Final = (HANDOFF, PING)


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "zmesh.NOREPLY"


#: Return this from `handle_call` to reply later with `self.reply(caller, value)`.
NOREPLY: Final = _NoReply()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is waiting for a reply: the pid the reply goes to (for `Node.call`, the
    calling node's call router, which hands it to the waiting call) and the call's ref."""

    pid: Pid
    ref: Ref


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
        self.node.send(caller.pid, (caller.ref, value))

    def stop(self, reason: object = NORMAL) -> None:
        """Stop the server after the current hook returns: `terminate(reason)`, then exit."""
        raise _Stop(reason)


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
    try:
        while True:
            message = await proc.receive()
            if type(message) is tuple and message and message[0] == CALL and len(message) == 3:
                (caller_pid, ref), request = message[1], message[2]
                if (type(request) is str and request in _ENGINE_STRS) or (
                    type(request) is tuple and request and request[0] in _ENGINE_TUPLES
                ):
                    await _engine_request(server, request, caller_pid, ref)
                    continue
                caller = Caller(caller_pid, ref)
                result = await _maybe_await(server.handle_call(request, caller))
                if result is not NOREPLY:
                    node.send(caller_pid, (ref, result))
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
        server.node.send(caller, (ref, True))
        return
    if caller.node != server.node.name:
        log.warning("%s: engine request %r from %s refused", server.pid, request, caller)
        server.node.send(caller, (ref, None))
        return
    if request == HANDOFF:
        state = await _maybe_await(server.handoff())
        server.node.send(caller, (ref, state))
        raise _Stop(SHUTDOWN)
    if request[0] == RESTORE:
        await _maybe_await(server.restore(request[1] if len(request) > 1 else None))
        server.node.send(caller, (ref, None))
        return
    server.node.send(caller, (ref, None))
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

    A call monitors its target from this process, with the monitor's ref as the call's
    tag; the reply `(ref, value)` or the `Down` finds the waiting call by that ref. A
    reply to a call that timed out finds nothing and is dropped, like anything else
    sent here. A caller's pid that does not change from call to call stays in both
    nodes' codec caches, and no process is made and torn down per call.
    """

    __slots__ = ("_calls",)

    def __init__(self, node: Node, pid: Pid) -> None:
        super().__init__(node, pid)
        self.trap_exit = True  # exit signals (from a server linked to it) are dropped
        self._calls: dict[Ref, asyncio.Future[Any]] = {}

    def deliver(self, message: object) -> None:
        if type(message) is tuple and len(message) == 2 and type(message[0]) is Ref:
            waiting = self._calls.pop(message[0], None)
            if waiting is not None:
                waiting.set_result(message[1])
        elif type(message) is Down:
            waiting = self._calls.pop(message.ref, None)
            if waiting is not None:
                waiting.set_exception(_call_failed(message.pid, message.reason))

    def _abort_receive(self, reason: object) -> None:
        calls, self._calls = self._calls, {}
        for waiting in calls.values():
            waiting.set_exception(ProcessExited(reason))

    async def call(self, target: Pid, request: Any, timeout: float) -> Any:
        node = self.node
        ref = node.make_ref()
        waiting = self._calls[ref] = node._loop.create_future()
        timer = node._loop.call_later(timeout, self._time_out, ref, target, timeout)
        started = node._loop.time()
        try:
            node._monitor(self, target, ref)  # a dead target's Down comes at once
            if not waiting.done():
                node.send(target, (CALL, (self.pid, ref), request))
            return await waiting
        finally:
            timer.cancel()
            self._calls.pop(ref, None)
            observe = node._call_observer
            if observe is not None:
                observe(node._loop.time() - started)
            node._demonitor(self, ref)

    def _time_out(self, ref: Ref, target: Pid, timeout: float) -> None:
        waiting = self._calls.pop(ref, None)
        if waiting is not None:
            waiting.set_exception(CallTimeout(f"{target} did not reply within {timeout} s"))


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
        return (
            type(m) is tuple and len(m) == 4 and m[0] == "$gen_init" and m[1] == pid
        ) or (type(m) is Down and m.ref == ref)

    return match


def is_server(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, GenServer)
