"""Applications: user code that starts with the node and stops before it leaves (OTP's
application behaviour, as a release runs it)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from zmesh.errors import ConfigError, RemoteError
from zmesh.runtime.loader import resolve
from zmesh.terms import NORMAL, SHUTDOWN, Down, Pid

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.app")

#: A top process that exits on its own with one of these ended the application cleanly.
CLEAN_EXITS = (NORMAL,)


class Application:
    """Subclass and override `start` (and `stop` if there is something to undo).

    `start(node)` runs once the node is up: it may start supervisors, declare services,
    register names, and returns the pid of the application's top process (usually a
    supervisor) or None. `stop(node)` runs first when the node is asked to leave; the
    top process is then shut down ("shutdown", then "kill" after `shutdown_timeout`)."""

    #: Seconds the top process gets to exit on "shutdown" before it is killed.
    shutdown_timeout: float = 10.0

    async def start(self, node: Node) -> Pid | None:
        raise NotImplementedError(f"{type(self).__name__}.start(node) is not defined")

    async def stop(self, node: Node) -> None:
        return None

    @staticmethod
    def load(ref: str) -> Application:
        """The application `ref` ("module:qualname") names: an `Application` subclass
        (instantiated), an instance, or `async def start(node)`. ConfigError otherwise."""
        try:
            target = resolve(ref, None)
        except (RemoteError, ConfigError) as exc:
            raise ConfigError(f"cannot load application {ref!r}: {exc}") from None
        if isinstance(target, type) and issubclass(target, Application):
            return target()
        if isinstance(target, Application):
            return target
        if inspect.iscoroutinefunction(target):
            return _FunctionApplication(target)
        raise ConfigError(
            f"application {ref!r} is {target!r}: expected an async def start(node), "
            "a zmesh.Application subclass or an instance of one"
        )

    async def serve(self, node: Node, stop: asyncio.Event) -> object:
        """Start on `node`, then run until `stop` is set or the top process exits.

        Returns None after an orderly stop (`stop` set: `stop(node)` ran and the top
        process was shut down), or the top process's exit reason if it exited on its
        own (a supervisor past its restart intensity exits "shutdown")."""
        top = await self.start(node)
        if top is not None and not isinstance(top, Pid):
            raise ConfigError(f"{type(self).__name__}.start returned {top!r}: a Pid or None")
        async with node.process() as me:
            ref = me.monitor(top) if top is not None else None
            stopping = asyncio.ensure_future(stop.wait())
            downed = (
                asyncio.ensure_future(me.receive(match=lambda m: type(m) is Down and m.ref == ref))
                if ref is not None
                else None
            )
            waiting = [f for f in (stopping, downed) if f is not None]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in waiting:
                    if not f.done():
                        f.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
            if downed is not None and downed.done() and not downed.cancelled():
                reason = downed.result().reason
                log.warning("%s: application top process %s exited: %s", node.name, top, reason)
                return reason
            await self.stop(node)
            if top is not None:
                node.exit(top, SHUTDOWN)
                try:
                    await me.receive(
                        match=lambda m: type(m) is Down and m.ref == ref,
                        timeout=self.shutdown_timeout,
                    )
                except TimeoutError:
                    node.exit(top, "kill")
        return None


class _FunctionApplication(Application):
    def __init__(self, start: Callable[[Node], Awaitable[Any]]) -> None:
        self._start = start

    async def start(self, node: Node) -> Pid | None:
        result: Any = await self._start(node)
        return result  # type: ignore[no-any-return]
