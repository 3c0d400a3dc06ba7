"""`ReplicatedMap`: an add-wins LWW map held by every node that opened it (DeltaCrdt).

Reads and writes touch only the local replica. Each write's delta joins a pending
batch; the batch goes to the map's members on the next turn of the event loop, so a
burst of writes travels as one message per member. When a member appears (it opens
the map, or its node comes up again after a partition or a restart) the two nodes
swap their full states (in chunks), which is the anti-entropy that heals every gap;
and every `DIGEST_EVERY` seconds each replica sends its members its causal context
(``map.digest``, a version vector): a member that has seen more sends its state, so a
state lost in a reconnection race is made up within a period.

The members of a map are the connected nodes that opened a map of the same name. The
messages between them are the request ``map.hello`` and the casts ``map.state``,
``map.delta``, ``map.digest`` and ``map.bye``, handled by one `MapRouter` per node; a malformed one
raises DataError, is counted (``bad_data`` in the node's stats, ``bad_requests`` for a
hello) and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from zmesh.core.crdt_map import CausalContext, MapState
from zmesh.core.crdt_wire import check_key, decode_state, encode_state
from zmesh.core.ring import Key
from zmesh.errors import ConfigError, DataError

if TYPE_CHECKING:
    from zmesh.runtime.map_router import MapRouter

__all__ = ["Change", "ReplicatedMap"]

log = logging.getLogger("zmesh.data")

#: Entries per `map.state` chunk: a full state of any size stays far below the
#: codec's limits on one message.
CHUNK = 4096
#: Seconds between two digests (each member's causal context, sent to the others).
DIGEST_EVERY = 1.0
#: A chunked state being received is dropped if it grows past this many entries.
MAX_STATE = 10_000_000


class Change(NamedTuple):
    """A visible change of one key: `old` or `new` is None when the key was absent."""

    key: Key
    old: Any
    new: Any


class ReplicatedMap:
    """One node's replica of the map `name` (from `await node.replicated_map(name)`)."""

    def __init__(self, router: MapRouter, name: str) -> None:
        self.name = name
        self._router = router
        self._node = router.node
        self._replica = f"{self._node.name}#{self._node.creation}"
        self._state = MapState()
        self._pending: MapState | None = None
        self._members: set[str] = set()
        self._watchers: list[asyncio.Queue[Change | None]] = []
        self._listeners: list[Callable[[Change], None]] = []
        self._inbound: dict[str, dict[int, list[Any]]] = {}  # sender -> sync -> entries
        self._sending: dict[str, bool] = {}  # member -> another state asked for meanwhile
        self._sent_at: dict[str, float] = {}  # member -> when our last state went out
        self._closed = False
        self.stats = {
            "deltas_out": 0,
            "deltas_in": 0,
            "states_out": 0,
            "states_in": 0,
            "states_incomplete": 0,
        }

    # -- reads: the local replica -------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        return self._state.get(key, default)

    def __getitem__(self, key: Key) -> Any:
        if key not in self._state:
            raise KeyError(key)
        return self._state.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def __len__(self) -> int:
        return len(self._state)

    def __iter__(self) -> Iterator[Key]:
        """The keys, over a snapshot (writes during the loop are safe)."""
        return iter(list(self._state.keys()))

    def keys(self) -> list[Key]:
        return list(self._state.keys())

    def items(self) -> list[tuple[Key, Any]]:
        return self._state.items()

    def to_dict(self) -> dict[Key, Any]:
        return self._state.to_dict()

    def members(self) -> list[str]:
        """The other nodes holding a replica, sorted."""
        return sorted(self._members)

    def memory(self) -> dict[str, int]:
        """What the replica holds: live keys, dots (> keys only after concurrent puts),
        context dots beyond the version vector (gaps), writers in the vector."""
        ctx = self._state.context
        return {
            "keys": len(self._state),
            "dots": self._state.dot_count(),
            "gaps": ctx.dots(),
            "writers": len(ctx.vv),
        }

    # -- writes: local at once, replicated in the background --------------------------------

    def put(self, key: Key, value: Any) -> None:
        """Set `key` to `value` here now; the peers get it in the background.

        Raises KeyTypeError for a key that is not a str, bytes, int or tuple of
        those, EncodeError for a value the codec cannot carry.
        """
        self._check_open()
        check_key(key)
        dist = self._node._dist
        if dist is not None:
            dist.codec.encode(value)  # EncodeError here, not on a peer
        old = self._state.get(key)
        self._local(self._state.put(self._replica, key, value))
        self._emit({key: (old, value)})

    def delete(self, key: Key) -> None:
        """Remove `key` here now (a no-op if absent); the peers follow in the background."""
        self._check_open()
        check_key(key)
        old = self._state.get(key)
        delta = self._state.delete(self._replica, key)
        if delta is not None:
            self._local(delta)
            self._emit({key: (old, None)})

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"the replicated map {self.name!r} is closed")

    def _local(self, delta: MapState) -> None:
        if not self._members:
            return
        if self._pending is None:
            self._pending = MapState()
            self._pending.scope = frozenset()
            self._router.loop.call_soon(self._flush)
        pending = self._pending
        pending.join(delta)
        pending.scope = pending.scope | delta.scope  # type: ignore[operator]

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not self._members:
            return
        body = [self.name, encode_state(pending)]
        for member in sorted(self._members):  # a stable order (deterministic simulation)
            if self._router.cast(member, "map.delta", body):
                self.stats["deltas_out"] += 1

    # -- change events --------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[Change]:
        """Every visible change from now on, local or remote, as `Change(key, old, new)`.

        Ends when the map is closed. Each iterator buffers what it has not consumed yet.
        """
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while True:
                change = await queue.get()
                if change is None:
                    return
                yield change
        finally:
            if queue in self._watchers:
                self._watchers.remove(queue)

    def watch(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Call `listener(change)` synchronously on every visible change; returns an
        unsubscribe function. A listener that raises is logged and kept."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, changes: dict[Key, tuple[Any, Any]]) -> None:
        if not self._watchers and not self._listeners:
            return
        for key, (old, new) in changes.items():
            change = Change(key, old, new)
            for queue in self._watchers:
                queue.put_nowait(change)
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    log.exception("map %r: change listener %r failed", self.name, listener)

    # -- replication -------------------------------------------------------------------------------

    def _on_delta(self, sender: str, wire: Any) -> None:
        delta = decode_state(wire)
        if delta.scope is None:
            raise DataError(f"a delta from {sender} has no scope")
        self.stats["deltas_in"] += 1
        self._emit(self._state.join(delta))

    def _send_state(self, member: str) -> None:
        """Send our full state to `member` in chunks (entries first, the context last),
        in the background: a snapshot taken now, one chunk per turn of the loop, so a
        large map neither blocks the loop nor mixes entries and context of two times.
        One state per member at a time: one asked for meanwhile follows it."""
        if member in self._sending:
            self._sending[member] = True
            return
        self._sending[member] = False
        self._router.spawn(self._send_states(member))

    async def _send_states(self, member: str) -> None:
        try:
            again = True
            while again and not self._closed:
                self.stats["states_out"] += 1
                if not await self._send_chunks(member, encode_state(self._state)):
                    return  # it went down: it gets a fresh state when it comes back
                self._sent_at[member] = self._router.loop.time()
                again = self._sending.get(member, False)
                self._sending[member] = False
        finally:
            self._sending.pop(member, None)

    async def _send_chunks(self, member: str, wire: list[Any]) -> bool:
        entries = wire[0]  # encode_state builds new lists: a snapshot
        sync = next(self._router.sync_ids)
        chunks = [entries[i : i + CHUNK] for i in range(0, len(entries), CHUNK)] or [[]]
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(0)
            last = i == len(chunks) - 1
            tail = [wire[1], wire[2], wire[3], len(entries)] if last else None
            if not self._router.cast(member, "map.state", [self.name, sync, chunk, tail]):
                return False
        return True

    def _on_state(self, sender: str, sync: Any, chunk: Any, tail: Any) -> None:
        if type(sync) is not int or type(chunk) is not list:
            raise DataError(f"a map state chunk from {sender} is [name, sync, chunk, tail]")
        syncs = self._inbound.setdefault(sender, {})  # a sender's syncs may interleave
        entries = syncs.setdefault(sync, [])
        entries.extend(chunk)
        if sum(len(e) for e in syncs.values()) > MAX_STATE:
            del self._inbound[sender]
            raise DataError(f"a map state from {sender} exceeds {MAX_STATE} entries")
        if tail is None:
            return
        del syncs[sync]
        if not syncs:
            del self._inbound[sender]
        if type(tail) is not list or len(tail) != 4 or type(tail[3]) is not int:
            raise DataError(f"a map state tail from {sender} is [vv, cloud, stamp, count]")
        if len(entries) != tail[3]:  # chunks lost to a reconnection: its context would
            self.stats["states_incomplete"] += 1  # retire the entries missing; the
            return  # sender sends a state again (hello on reconnect, digest)
        state = decode_state([entries, tail[0], tail[1], tail[2], None])
        self.stats["states_in"] += 1
        self._emit(self._state.join(state))
        if sender not in self._members:  # it has just opened the map: it needs ours too
            self._members.add(sender)
            self._send_state(sender)

    def _on_hello(self, sender: str) -> None:
        self._members.add(sender)
        self._send_state(sender)

    def _on_digest(self, sender: str, theirs: CausalContext) -> None:
        ctx = self._state.context
        ahead = any(n > theirs.vv.get(r, 0) for r, n in ctx.vv.items()) or any(
            dot not in theirs for dot in ctx.cloud
        )
        if not ahead:
            return
        self._members.add(sender)
        # A digest written before our state reached it says nothing: while one goes
        # out, and for a period after, the next digest asks again if it still must.
        sent_at = self._sent_at.get(sender)
        recent = sent_at is not None and self._router.loop.time() - sent_at < DIGEST_EVERY
        if sender not in self._sending and not recent:
            self._send_state(sender)  # it has not seen everything we have

    def _on_bye(self, sender: str) -> None:
        self._members.discard(sender)
        self._inbound.pop(sender, None)

    def _on_down(self, name: str) -> None:
        self._members.discard(name)
        self._inbound.pop(name, None)
        self._sent_at.pop(name, None)

    # -- lifecycle -------------------------------------------------------------------------------

    def _close(self) -> None:
        if self._closed:
            return
        self._flush()
        self._closed = True
        for member in sorted(self._members):  # a stable order (deterministic simulation)
            self._router.cast(member, "map.bye", self.name)
        self._members.clear()
        for queue in self._watchers:
            queue.put_nowait(None)

    async def close(self) -> None:
        """Leave the map: peers stop replicating to this node; `changes()` iterators end.
        The local replica stays readable."""
        self._close()
        self._router.maps.pop(self.name, None)

    def __repr__(self) -> str:
        return f"<ReplicatedMap {self.name!r} on {self._node.name}: {len(self)} keys>"
