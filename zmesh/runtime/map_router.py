"""The node's replicated maps by name, and the ``map.*`` messages between nodes: the
request ``map.hello`` (a node that opened the map announces it) and the casts
``map.state``, ``map.delta``, ``map.digest`` and ``map.bye``. A malformed body raises
DataError, counted as ``bad_data`` (``bad_requests`` for a hello); nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from zmesh.core.crdt_wire import decode_state
from zmesh.errors import ConfigError, DataError, ZmeshError
from zmesh.runtime.replicated_map import DIGEST_EVERY, ReplicatedMap

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

__all__ = ["MapRouter"]


class MapRouter:
    """The node's replicated maps by name, and the `map.*` casts between nodes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.maps: dict[str, ReplicatedMap] = {}
        self.sync_ids = itertools.count(1)
        self.loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        dist = node._need_dist()
        # A request, not a cast: a node that never opened a map answers "unknown
        # request" quietly, where an unexpected cast would be counted as refused.
        dist.handle("map.hello", self._on_hello)
        for op, handler in (
            ("map.state", self._on_state),
            ("map.delta", self._on_delta),
            ("map.bye", self._on_bye),
            ("map.digest", self._on_digest),
        ):
            dist.handle_cast(op, self._guarded(handler))
        self._unsubscribe = node.subscribe_nodes(self._on_node_event)
        self._timer = self.loop.call_later(DIGEST_EVERY, self._digest)

    def _digest(self) -> None:
        """Tell each member what this replica has seen (its causal context, a few
        bytes): a member that has seen more answers with its state, so a full state
        lost in a reconnection race is made up within a period. Stops with the node
        (an aborted node never calls `stop`)."""
        if self.node._stopping:
            return
        for m in self.maps.values():
            if m._members:
                ctx = m._state.context
                cloud = [list(d) for d in sorted(ctx.cloud)]
                body = [m.name, [[r, n] for r, n in ctx.vv.items()], cloud]
                for member in sorted(m._members):
                    self.cast(member, "map.digest", body)
        self._timer = self.loop.call_later(DIGEST_EVERY, self._digest)

    def _on_digest(self, sender: str, body: Any) -> None:
        m = self._map(body, sender)
        if len(body) != 3:
            raise DataError(f"map.digest from {sender} is [name, vv, cloud]")
        if m is not None:
            m._on_digest(sender, decode_state([[], body[1], body[2], 0, []]).context)

    def open(self, name: str) -> ReplicatedMap:
        """The map `name` on this node, opened (and announced to every peer) if new."""
        if type(name) is not str or not name:
            raise ConfigError(f"a replicated map's name is a non-empty str, got {name!r}")
        m = self.maps.get(name)
        if m is None:
            m = self.maps[name] = ReplicatedMap(self, name)
            for peer in self.node.nodes():
                self._hello(peer, name)
        return m

    def _hello(self, peer: str, name: str) -> None:
        """Tell `peer` we hold `name`; if it does too, it adds us and sends its state."""
        self.spawn(self._ask(peer, name))

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, peer: str, name: str) -> None:
        dist = self.node._dist
        if dist is None:
            return
        with contextlib.suppress(ZmeshError):
            await dist.request(peer, "map.hello", name, None)

    def cast(self, node: str, op: str, body: Any) -> bool:
        dist = self.node._dist
        return dist is not None and dist.cast(node, op, body)

    def _guarded(self, handler: Any) -> Any:
        def guarded(sender: str, body: Any) -> None:
            try:
                handler(sender, body)
            except DataError as exc:
                dist = self.node._dist
                if dist is not None:
                    dist.refuse("bad_data", f"from {sender}: {exc}")

        return guarded

    def _map(self, body: Any, sender: str) -> ReplicatedMap | None:
        if type(body) is not list or not body or type(body[0]) is not str:
            raise DataError(f"a map message from {sender} must start with the map's name")
        return self.maps.get(body[0])

    def _on_hello(self, sender: str, name: Any) -> bool:
        if type(name) is not str:
            raise DataError(f"map.hello from {sender} must carry a map name, got {name!r}")
        m = self.maps.get(name)
        if m is not None:
            m._on_hello(sender)
        return m is not None

    def _on_state(self, sender: str, body: Any) -> None:
        m = self._map(body, sender)
        if len(body) != 4:
            raise DataError(f"map.state from {sender} is [name, sync, chunk, tail]")
        if m is not None:
            m._on_state(sender, body[1], body[2], body[3])

    def _on_delta(self, sender: str, body: Any) -> None:
        m = self._map(body, sender)
        if len(body) != 2:
            raise DataError(f"map.delta from {sender} is [name, delta]")
        if m is not None:  # joining is always safe, even from a node not yet a member
            m._on_delta(sender, body[1])

    def _on_bye(self, sender: str, name: Any) -> None:
        m = self.maps.get(name) if type(name) is str else None
        if m is not None:
            m._on_bye(sender)

    def _on_node_event(self, event: str, name: str) -> None:
        for m in self.maps.values():
            if event == "down":
                m._on_down(name)
            else:
                self._hello(name, m.name)

    async def stop(self) -> None:
        """Close every map (the node is stopping)."""
        self._unsubscribe()
        self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for m in list(self.maps.values()):
            m._close()
        self.maps.clear()
