"""The live ring: a `HashRing` over the cluster's current members, this node included
unless it is hidden (hidden nodes own no keys, and their peers leave them out too).

It follows node up/down events. Every node that shares a membership view builds the
same ring (placement depends only on member names, weights and vnodes), so all agree
where a key lives. Watchers are called with the new ring after every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from zmesh.core.ring import HashRing

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.ring")

RingWatcher = Callable[[HashRing], None]


class LiveRing:
    """Keeps `ring` equal to a HashRing over this node (unless hidden) and `node.nodes()`,
    its visible peers."""

    def __init__(self, node: Node, vnodes: int = 128) -> None:
        self._node = node
        self._vnodes = vnodes
        self.ring = HashRing([] if node.hidden else [node.name], vnodes=vnodes)
        self._watchers: list[RingWatcher] = []
        if node._dist is not None:
            # Without hidden peers: a query tool coming and going must not move keys.
            node._dist.subscribe(self._on_node_event)

    def _on_node_event(self, event: str, name: str) -> None:
        ring = self.ring.copy()  # watchers may keep the old ring: never mutate it in place
        if event == "up":
            ring.add_node(name)
        elif name in ring:
            ring.remove_node(name)
        self.ring = ring
        for watcher in list(self._watchers):
            try:
                watcher(ring)
            except Exception:
                log.exception("ring watcher %r failed", watcher)

    def watch(self, watcher: RingWatcher) -> Callable[[], None]:
        """Call `watcher(ring)` after every membership change; returns an unsubscribe."""
        self._watchers.append(watcher)

        def unsubscribe() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return unsubscribe

    async def changes(self) -> AsyncIterator[HashRing]:
        """Yield the ring after each membership change (latest first if several queue up)."""
        queue: asyncio.Queue[HashRing] = asyncio.Queue()
        unsubscribe = self.watch(queue.put_nowait)
        try:
            while True:
                ring = await queue.get()
                while not queue.empty():
                    ring = queue.get_nowait()
                yield ring
        finally:
            unsubscribe()
