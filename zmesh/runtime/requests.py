"""Requests and casts between nodes (REQUEST, REPLY, CAST): how subsystems talk.

A request names an op (a handler registered with `handle`) and waits for the reply:
the handler's result, or its ZmeshError re-raised on the caller's side by type name.
A cast is one-way, to one node or to every node. Remote spawn and remote GenServer
start are requests too, limited to the modules the node was told to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from zmesh.core import protocol as proto
from zmesh.core.protocol import Kind, check_type
from zmesh.errors import (
    CallTimeout,
    ConfigError,
    EncodeError,
    NodeDown,
    NoProc,
    RemoteError,
    ZmeshError,
)
from zmesh.runtime.loader import reference, resolve
from zmesh.runtime.membership import Peer
from zmesh.terms import Pid, Ref

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution

log = logging.getLogger("zmesh.dist")

RequestHandler = Callable[[str, Any], Awaitable[Any] | Any]  # (from node, body) -> reply
CastHandler = Callable[[str, Any], None]

# The errors a reply may carry by name; any other comes back as RemoteError.
_ERRORS: dict[str, type[ZmeshError]] = {
    cls.__name__: cls for cls in (NoProc, RemoteError, ConfigError, EncodeError, NodeDown)
}


class Requests:
    """Request handlers, cast handlers, and the requests of ours awaiting a reply."""

    def __init__(self, dist: Distribution) -> None:
        self._dist = dist
        self._pending: dict[Ref, tuple[str, asyncio.Future[Any]]] = {}  # ref -> (node, reply)
        self._handlers: dict[str, RequestHandler] = {
            "spawn": self._handle_spawn,
            "start": self._handle_start,
            "info": lambda sender, body: dist.node.info(),
        }
        self._cast_handlers: dict[str, CastHandler] = {}

    def handle(self, op: str, handler: RequestHandler) -> None:
        """Answer requests `op` from peers with `handler(from_node, body)`."""
        self._handlers[op] = handler

    def handle_cast(self, op: str, handler: CastHandler) -> None:
        """Take one-way system messages `op` from peers with `handler(from_node, body)`."""
        self._cast_handlers[op] = handler

    def cast(self, name: str, op: str, body: object) -> bool:
        """Send a one-way system message to node `name`; False if it is not connected."""
        peer = self._dist.up_peer(name)
        if peer is None:
            return False
        self._dist.emit(peer, Kind.CAST, op, body)
        return True

    def broadcast(self, op: str, body: object) -> None:
        """A one-way system message to every connected node, encoded once."""
        dist = self._dist
        if dist._left:
            return
        env = proto.encode_envelope(dist.codec, Kind.CAST, op, body)
        for peer in dist.sessions.values():
            if peer.up:
                peer.link.enqueue(env)

    async def request(self, name: str, op: str, body: object, timeout: float | None) -> Any:
        """Ask node `name` to run `op`; its reply, or NodeDown / CallTimeout / its error."""
        dist = self._dist
        peer = dist.up_peer(name)
        if peer is None:
            raise NodeDown(f"node {name!r} is not connected")
        timeout = dist.config.request_timeout if timeout is None else timeout
        ref = dist.node.make_ref()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (name, future)
        try:
            dist.emit(peer, Kind.REQUEST, ref, op, body)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"node {name!r} did not answer {op!r} within {timeout} s") from None
        finally:
            self._pending.pop(ref, None)

    def peer_lost(self, name: str) -> None:
        """Fail our requests to `name` with NodeDown."""
        for ref, (node, fut) in list(self._pending.items()):
            if node == name and not fut.done():
                fut.set_exception(NodeDown(f"node {name!r} went down"))
                del self._pending[ref]

    def close(self) -> None:
        """Fail every request still waiting: the node stopped."""
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NodeDown("the node stopped"))

    # -- inbound --------------------------------------------------------------------------------

    def on_request(self, peer: Peer, env: list[Any]) -> None:
        _, ref, op, body = env
        check_type(ref, Ref)
        handler = self._handlers.get(op)
        if handler is None:
            error = ["RemoteError", f"unknown request {op!r}"]
            self._dist.emit(peer, Kind.REPLY, ref, False, error)
            return
        self._dist.spawn_task(self._answer(peer.name, ref, handler, body))

    async def _answer(self, name: str, ref: Ref, handler: RequestHandler, body: Any) -> None:
        try:
            result = handler(name, body)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            reply: list[Any] = [True, result]
        except ZmeshError as exc:
            reply = [False, [type(exc).__name__, str(exc)]]
            if isinstance(exc, ValueError):  # ConfigError: a malformed body, counted
                self._dist.refuse("bad_requests", f"from {name}: {exc}")
        except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
            # A body of the wrong shape: refused and counted, no traceback per frame.
            self._dist.refuse("bad_requests", f"from {name}: {exc!r}")
            reply = [False, ["RemoteError", f"malformed request: {type(exc).__name__}: {exc}"]]
        except Exception as exc:
            log.exception("request handler failed")
            reply = [False, ["RemoteError", f"{type(exc).__name__}: {exc}"]]
        peer = self._dist.up_peer(name)
        if peer is not None:
            with contextlib.suppress(EncodeError):
                self._dist.emit(peer, Kind.REPLY, ref, *reply)

    def on_reply(self, peer: Peer, env: list[Any]) -> None:
        _, ref, ok, body = env
        entry = self._pending.get(ref)
        if entry is None or entry[0] != peer.name:
            return  # the caller gave up: a late reply is discarded
        future = entry[1]
        if future.done():
            return
        if ok:
            future.set_result(body)
        else:
            kind, text = body
            future.set_exception(_ERRORS.get(kind, RemoteError)(f"{peer.name}: {text}"))

    def on_cast(self, peer: Peer, env: list[Any]) -> None:
        _, op, body = env
        handler = self._cast_handlers.get(op)
        if handler is None:
            self._dist.refuse("unexpected_envelopes", f"cast {op!r} from {peer.name}")
            return
        handler(peer.name, body)

    # -- remote spawn and start -------------------------------------------------------------------

    async def spawn_remote(
        self, name: str, fn: Callable[..., Any] | str, args: tuple[Any, ...], timeout: float | None
    ) -> Pid:
        """Start `fn(proc, *args)` on node `name`; its pid, or RemoteError / NodeDown."""
        result = await self.request(name, "spawn", [reference(fn), list(args)], timeout)
        if type(result) is not Pid:
            raise RemoteError(f"node {name!r} answered spawn with {result!r}")
        return result

    def _handle_spawn(self, sender: str, body: Any) -> Pid:
        ref, args = body
        fn = resolve(ref, self._dist.load)
        if not callable(fn):
            raise RemoteError(f"{ref!r} is not callable")
        return self._dist.node.spawn(fn, *args)

    async def _handle_start(self, sender: str, body: Any) -> Pid:
        ref, args, name, timeout = body
        cls = resolve(ref, self._dist.load)
        pid: Pid = await self._dist.node._start_local(cls, list(args), name, float(timeout))
        return pid
