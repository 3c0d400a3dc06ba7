"""Presence (Phoenix.Tracker): which processes are tracked under which topic, cluster
wide, with metadata; join, update and leave events.

Built on the replicated map ``zmesh.presence``: an entry's key is ``(topic, node,
pid id, pid creation)`` and its value ``[pid, meta]``. A node tracks only its own
processes and removes their entries when they exit (an exit hook). When a node is
lost, every survivor removes that node's entries (the deletes agree, so doing it on
each survivor is harmless); when it comes back, it writes its live entries again with
new dots, which no survivor has retired, so they reappear everywhere.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NamedTuple

from zmesh.errors import ConfigError
from zmesh.terms import Pid

if TYPE_CHECKING:
    from zmesh.runtime.node import Node
    from zmesh.runtime.replicated_map import Change, ReplicatedMap

__all__ = ["Presence", "PresenceEvent"]

MAP_NAME = "zmesh.presence"


class PresenceEvent(NamedTuple):
    """`kind` is "join", "update" (new meta) or "leave"; `meta` the latest known."""

    kind: str
    topic: str
    pid: Pid
    meta: Any


def _key(topic: str, pid: Pid) -> tuple[str, str, int, int]:
    return (topic, pid.node, pid.id, pid.creation)


class Presence:
    """The node's view of every tracked process (from `await node.presence()`)."""

    def __init__(self, node: Node, shared: ReplicatedMap) -> None:
        self._node = node
        self._map = shared
        self._by_topic: dict[str, dict[Pid, Any]] = {}
        self._mine: dict[Pid, dict[str, Any]] = {}  # local pid -> topic -> meta
        self._watchers: dict[str, list[asyncio.Queue[PresenceEvent]]] = {}
        for key, value in shared.items():
            self._apply(key, None, value)
        shared.watch(self._on_change)
        node.on_exit(self._on_exit)
        node.subscribe_nodes(self._on_node_event)

    # -- the public face ------------------------------------------------------------------

    def track(self, topic: str, pid: Pid, meta: Any = None) -> bool:
        """Track local process `pid` under `topic` with `meta` (tracking it again
        updates the meta). False if the process is not alive."""
        self._check(topic, pid)
        if not self._node.is_alive(pid):
            return False
        self._mine.setdefault(pid, {})[topic] = meta
        self._map.put(_key(topic, pid), [pid, meta])
        return True

    def untrack(self, topic: str, pid: Pid) -> None:
        """Stop tracking `pid` under `topic` (a no-op if it is not tracked)."""
        self._check(topic, pid)
        topics = self._mine.get(pid)
        if topics is not None:
            topics.pop(topic, None)
            if not topics:
                del self._mine[pid]
        self._map.delete(_key(topic, pid))

    def list(self, topic: str) -> list[tuple[Pid, Any]]:
        """Every `(pid, meta)` tracked under `topic` across the cluster, sorted by pid."""
        entries = self._by_topic.get(topic, {})
        return sorted(entries.items(), key=lambda item: (item[0].node, item[0].id))

    def topics(self) -> builtins.list[str]:
        return sorted(self._by_topic)

    async def events(self, topic: str) -> AsyncIterator[PresenceEvent]:
        """Joins, updates and leaves under `topic` from now on."""
        queue: asyncio.Queue[PresenceEvent] = asyncio.Queue()
        self._watchers.setdefault(topic, []).append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            queues = self._watchers.get(topic, [])
            if queue in queues:
                queues.remove(queue)

    # -- keeping the index and the entries right ------------------------------------------------

    def _check(self, topic: str, pid: Pid) -> None:
        if type(topic) is not str:
            raise ConfigError(f"a presence topic is a str, got {topic!r}")
        if type(pid) is not Pid or pid.node != self._node.name:
            raise ConfigError(f"only processes of this node can be tracked here, got {pid!r}")

    def _on_change(self, change: Change) -> None:
        self._apply(change.key, change.old, change.new)

    def _apply(self, key: Any, old: Any, new: Any) -> None:
        if type(key) is not tuple or len(key) != 4 or type(key[0]) is not str:
            return
        topic = key[0]
        pid, meta = _entry(new)
        if pid is None:
            gone, old_meta = _entry(old)
            entries = self._by_topic.get(topic)
            if gone is None or entries is None or entries.pop(gone, None) is None:
                return
            if not entries:
                del self._by_topic[topic]
            self._notify(PresenceEvent("leave", topic, gone, old_meta))
            return
        entries = self._by_topic.setdefault(topic, {})
        if pid in entries and entries[pid] == meta:
            return  # written again (after a heal), nothing new to tell
        kind = "update" if pid in entries else "join"
        entries[pid] = meta
        self._notify(PresenceEvent(kind, topic, pid, meta))

    def _notify(self, event: PresenceEvent) -> None:
        for queue in self._watchers.get(event.topic, ()):
            queue.put_nowait(event)

    def _on_exit(self, pid: Pid, reason: object) -> None:
        topics = self._mine.pop(pid, None)
        for topic in topics or ():
            self._map.delete(_key(topic, pid))

    def _on_node_event(self, event: str, name: str) -> None:
        if event == "down":
            for key in [k for k in self._map if type(k) is tuple and k[1:2] == (name,)]:
                self._map.delete(key)
        else:  # our entries may have been removed over there while we were apart
            for pid, topics in self._mine.items():
                for topic, meta in topics.items():
                    self._map.put(_key(topic, pid), [pid, meta])


def _entry(value: Any) -> tuple[Pid | None, Any]:
    if type(value) is list and len(value) == 2 and type(value[0]) is Pid:
        return value[0], value[1]
    return None, None
