"""Reaping the partitioned store's tombstones (riak_core's delete_mode, simplified).

A delete is a write of the tombstone, kept like any sibling so that it wins over the
value everywhere. `REAP_AFTER` seconds after coordinating a delete, the coordinator
asks every member of the store what it holds for the key (primary replica and hints:
``["v", op, key]``, answered with the sibling set). The tombstone is collected only if

- every member is up and answered (a member out of reach may hold the old value and
  hand it back later, which would resurrect the key),
- the key's targets are its primaries (no fallback stands in for a down one),
- every primary holds exactly the same set of tombstones, and every other member
  holds that set or nothing;

then each member holding it is told ``["x", 0, key, siblings]`` and drops the key if
it still holds exactly that set (a write that came in meanwhile makes it differ, and
the key stays). A check that fails is tried again `REAP_TRIES` times, each after
twice the delay; after that the tombstone stays (correct, just not collected).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from zmesh.core.kv_wire import decode_siblings, encode_siblings
from zmesh.core.ring import Key
from zmesh.core.version_vector import Siblings
from zmesh.errors import DataError

if TYPE_CHECKING:
    from zmesh.runtime.kv import KV

__all__ = ["REAP_AFTER", "REAP_TRIES", "Reaper"]

#: Seconds from a delete to the check that its tombstone is everywhere.
REAP_AFTER = 3.0
#: Checks per deleted key before its tombstone is left in place.
REAP_TRIES = 4


class Reaper:
    """The deletes this node coordinated, waiting for their tombstones to be collected."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._pending: dict[Key, asyncio.TimerHandle] = {}
        self.reaped = 0

    def deleted(self, key: Key) -> None:
        """`key` was just deleted here (as its coordinator): check it later."""
        self._schedule(key, REAP_AFTER, 1)

    def _schedule(self, key: Key, delay: float, attempt: int) -> None:
        old = self._pending.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._pending[key] = loop.call_later(delay, self._check, key, delay, attempt)

    def _check(self, key: Key, delay: float, attempt: int) -> None:
        self._pending.pop(key, None)
        kv = self._kv
        v = kv.vnodes
        if v.closed:
            return
        me = v.node.name
        part = v.partition(key)
        primaries = kv.key_to_nodes(key)
        others = sorted(v.known - {me})
        views: dict[str, Siblings] = {me: v.local_view(key, part)}

        def retry() -> None:
            if attempt < REAP_TRIES:
                self._schedule(key, delay * 2, attempt + 1)

        if v.up() != v.known or any(t.hint_for for t in v.targets(part)):
            retry()
            return
        if not views[me].values() and not others:
            self._reap(key, views)
            return

        def on_answer(node: str, payload: Any) -> bool:
            try:
                views[node] = decode_siblings(payload)
            except DataError as exc:
                v.refuse(f"tombstone view from {node}: {exc}")
            return False

        def decide() -> None:
            if not self._reapable(views, primaries, others):
                retry()
            else:
                self._reap(key, views)

        g = kv.fanout.start(set(others), on_answer, kv.timeout, decide)
        for node in others:
            kv.outbox.add(node, ["v", g.op, key])

    def _reapable(
        self, views: dict[str, Siblings], primaries: list[str], others: list[str]
    ) -> bool:
        kv = self._kv
        if len(views) != len(others) + 1 or kv.vnodes.up() != kv.vnodes.known:
            return False  # someone did not answer, or the members changed meanwhile
        tombstones = views.get(primaries[0])
        if tombstones is None or not len(tombstones) or tombstones.values():
            return False  # not (only) tombstones
        return all(
            views[node] == tombstones if node in primaries else not len(views[node])
            or views[node] == tombstones
            for node in views
        )  # fmt: skip

    def _reap(self, key: Key, views: dict[str, Siblings]) -> None:
        kv = self._kv
        me = kv.vnodes.node.name
        for node, held in views.items():
            if not len(held):
                continue
            if node == me:
                self.drop(key, held)
            else:
                kv.outbox.add(node, ["x", 0, key, encode_siblings(held)])

    def drop(self, key: Key, tombstones: Siblings) -> None:
        """Drop `key` here (primary replica and hints) where it is exactly `tombstones`."""
        v = self._kv.vnodes
        if tombstones.values():
            return  # only tombstones are ever collected
        part = v.partition(key)
        table = v.data.get(part)
        if table is not None and table.get(key) == tombstones:
            del table[key]
            self.reaped += 1
        for hinted in v.hints.values():
            if hinted.get((part, key)) == tombstones:
                del hinted[(part, key)]

    def stop(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
