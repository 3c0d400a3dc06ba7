"""The replica side of the partitioned store: what one node holds for one store, the
store's members, and the handoffs (riak_core's vnodes, one table per partition).

- `data[partition][key]`: the sibling sets this node holds as a primary;
- `hints[node][(partition, key)]`: writes held for a down primary, delivered to it
  (``kv.handoff``) when it comes back, then dropped (hinted handoff);
- when the members change, every node pushes each partition it holds to the nodes
  that have just become its primaries, and drops the partitions it no longer owns
  once they have them (ownership handoff). A member that leaves gracefully pushes
  everything first, then says ``kv.leave``.

The members are the nodes that opened a store of this name; a member that is merely
down stays on the store's ring (its writes go to fallbacks as hints) until it leaves.
Every request and cast body is checked; a malformed one raises DataError, which the
node counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zmesh.core.crdt_wire import check_key
from zmesh.core.kv_placement import Target, partition_nodes, preference_list
from zmesh.core.kv_wire import decode_siblings, encode_siblings
from zmesh.core.ring import HashRing, Key, hash_key
from zmesh.core.version_vector import Sibling, Siblings
from zmesh.errors import DataError, KeyTypeError, ZmeshError

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.data")

__all__ = ["Vnodes"]

#: Sibling sets per ``kv.handoff`` request.
HANDOFF_BATCH = 2000


class Vnodes:
    """One node's share of the store `name`."""

    def __init__(self, node: Node, name: str, n: int, partitions: int) -> None:
        self.node = node
        self.me = node.name
        self.name = name
        self.n = n
        self.partitions = partitions
        self.known: set[str] = {node.name}
        self.ring = HashRing(self.known, vnodes=64)
        self.data: dict[int, dict[Key, Siblings]] = {}
        self.hints: dict[str, dict[tuple[int, Key], Siblings]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self._targets: dict[int, list[Target]] = {}
        self._local: dict[int, bool] = {}
        self.closed = False
        self.counters = {"handoffs_out": 0, "hints_delivered": 0, "repairs": 0}

    # -- reading and writing what this node holds ------------------------------------------

    def key(self, value: Any) -> Key:
        try:
            return check_key(value)
        except KeyTypeError as exc:
            raise DataError(f"bad store key: {exc}") from None

    def partition(self, key: Key) -> int:
        """`key_to_partition(key, self.partitions)`, inline: every write and read runs it."""
        return (hash_key(key) * self.partitions) >> 64

    def held(self, key: Key, hint_for: str | None = None, part: int | None = None) -> Siblings:
        """This node's sibling set for `key` (as a primary, or the hint for a node);
        `part` is the key's partition when the caller has it."""
        if part is None:
            part = self.partition(key)
        if hint_for is None:
            return self.data.get(part, {}).get(key) or Siblings()
        return self.hints.get(hint_for, {}).get((part, key)) or Siblings()

    def local_view(self, key: Key, part: int | None = None) -> Siblings:
        """Everything held here for `key`, primary and hints merged."""
        if part is None:
            part = self.partition(key)
        out = self.held(key, None, part)
        for table in self.hints.values():
            hinted = table.get((part, key))
            if hinted is not None:
                out = out.sync(hinted)
        return out

    def local_context(self, key: Key, part: int) -> dict[str, int]:
        """The context of everything held here for `key` (`local_view(key).context()`)."""
        if not self.hints and key not in self.data.get(part, ()):
            return {}
        return self.local_view(key, part).context()

    def merge(
        self, key: Key, siblings: Siblings, hint_for: str | None = None, part: int | None = None
    ) -> None:
        if part is None:
            part = self.partition(key)
        if hint_for is None or hint_for == self.node.name:
            table = self.data.get(part)
            if table is None:
                table = self.data[part] = {}
            old = table.get(key)
            table[key] = siblings if old is None else old.sync(siblings)
        else:
            hinted = self.hints.setdefault(hint_for, {})
            old = hinted.get((part, key))
            hinted[(part, key)] = siblings if old is None else old.sync(siblings)

    def apply(
        self, key: Key, sibling: Sibling, hint_for: str | None, part: int | None = None
    ) -> None:
        """Merge one write into what this node holds for `key` (`merge`, with the
        common case of a primary's replica inline: every write runs it n times)."""
        if hint_for is not None and hint_for != self.me:
            self.merge(key, Siblings.of(sibling), hint_for, part)
            return
        if part is None:
            part = self.partition(key)
        table = self.data.get(part)
        if table is None:
            table = self.data[part] = {}
        old = table.get(key)
        table[key] = Siblings.of(sibling) if old is None else old.add(sibling)

    # -- request and cast handlers (bodies without the store name) -------------------------

    def on_repair(self, sender: str, body: Any) -> None:
        key, siblings, hint_for = _fields(body, 3, "kv.repair", sender)
        self.merge(self.key(key), decode_siblings(siblings), check_hint(hint_for))
        self.counters["repairs"] += 1

    def on_handoff(self, sender: str, body: Any) -> bool:
        """Merge a handoff; False (refused, nothing merged) if this node is leaving too.
        A handoff from a leaving node (``[items, True]``) starts no ownership pass:
        its ``kv.leave`` that follows does."""
        if type(body) is list and len(body) == 2:
            items, leaving = body
            if type(leaving) is not bool:
                raise DataError(f"kv.handoff from {sender}: 'leaving' is a bool, got {leaving!r}")
        else:
            (items,) = _fields(body, 1, "kv.handoff", sender)
            leaving = False
        if type(items) is not list:
            raise DataError(f"kv.handoff from {sender} carries a list of [key, siblings]")
        decoded = []
        for item in items:
            if type(item) is not list or len(item) != 2:
                raise DataError(f"a handoff item is [key, siblings], got {item!r}")
            decoded.append((self.key(item[0]), decode_siblings(item[1])))
        if self.closed:
            return False
        for key, siblings in decoded:  # all checked first: a bad batch changes nothing
            self.merge(key, siblings)
        if not leaving:
            me = self.node.name
            parts = {self.partition(k) for k, _ in decoded}
            if any(me not in partition_nodes(self.ring, p, self.n) for p in parts):
                self.spawn(self._ownership_handoff(self.ring, self.ring))
        return True

    def on_keys(self, sender: str, body: Any) -> list[Any]:
        _fields(body, 0, "kv.keys", sender)
        out = [[k, encode_siblings(s)] for table in self.data.values() for k, s in table.items()]
        for table in self.hints.values():
            out.extend([k, encode_siblings(s)] for (_, k), s in table.items())
        return out

    # -- membership ----------------------------------------------------------------

    def up(self) -> set[str]:
        return (set(self.node.nodes()) & self.known) | {self.node.name}

    def targets(self, partition: int) -> list[Target]:
        """Where `partition` is written and read now (cached until the members or
        the reachable nodes change: see `invalidate`)."""
        found = self._targets.get(partition)
        if found is None:
            found = preference_list(self.ring, partition, self.n, self.up())
            self._targets[partition] = found
        return found

    def is_target(self, partition: int) -> bool:
        """Whether this node is one of `targets(partition)` (cached with them)."""
        found = self._local.get(partition)
        if found is None:
            me = self.node.name
            found = self._local[partition] = any(t.node == me for t in self.targets(partition))
        return found

    def invalidate(self) -> None:
        self._targets.clear()
        self._local.clear()

    def add_member(self, name: str) -> None:
        if name in self.known:
            self.deliver_hints(name)
            return
        self.set_members(self.known | {name})

    def remove_member(self, name: str) -> None:
        if name in self.known:
            # Writes held for it it never got: ours now, handed on to the partitions'
            # new primaries by the ownership handoff that follows.
            for (_, key), siblings in self.hints.pop(name, {}).items():
                self.merge(key, siblings)
            self.set_members(self.known - {name})

    def set_members(self, members: set[str]) -> None:
        if self.closed:
            return  # leaving: its partitions are handed over already
        old = self.ring
        self.known = members
        self.ring = HashRing(members, vnodes=64)
        self.invalidate()
        self.spawn(self._ownership_handoff(old, self.ring))
        for name in sorted(members - {self.node.name}):
            self.deliver_hints(name)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def request(self, node: str, op: str, body: list[Any], timeout: float) -> Any:
        dist = self.node._need_dist()
        return await dist.request(node, op, [self.name, *body], timeout)

    def refuse(self, detail: str) -> None:
        """Count a malformed message from a peer (`bad_data` in the node's stats)."""
        dist = self.node._dist
        if dist is not None:
            dist.refuse("bad_data", detail)

    def cast(self, node: str, op: str, body: list[Any]) -> None:
        dist = self.node._dist
        if dist is not None:
            dist.cast(node, op, [self.name, *body])

    # -- handoffs ----------------------------------------------------------------

    def deliver_hints(self, name: str) -> None:
        if self.hints.get(name) and name in self.up() and not self.closed:
            self.spawn(self._deliver_hints(name))

    async def _deliver_hints(self, name: str) -> None:
        table = self.hints.pop(name, None)
        if not table:
            return
        items = [(key, s) for (_, key), s in table.items()]
        if await self._push(name, items):
            self.counters["hints_delivered"] += len(items)
        else:  # keep them for the next time it comes up
            for key, siblings in items:
                self.merge(key, siblings, name)

    async def _push(
        self, node: str, items: list[tuple[Key, Siblings]], leaving: bool = False
    ) -> bool:
        """Hand `items` to `node`; False if it failed or `node` refused (it is leaving)."""
        try:
            for i in range(0, len(items), HANDOFF_BATCH):
                batch = [[k, encode_siblings(s)] for k, s in items[i : i + HANDOFF_BATCH]]
                body: list[Any] = [batch, True] if leaving else [batch]
                if await self.request(node, "kv.handoff", body, 10.0) is False:
                    log.debug("%s: store %r: %s is leaving too", self.node.name, self.name, node)
                    return False
            self.counters["handoffs_out"] += 1
            return True
        except ZmeshError as exc:
            log.warning(
                "%s: store %r handoff to %s failed: %s", self.node.name, self.name, node, exc
            )
            return False

    async def _ownership_handoff(self, old: HashRing, new: HashRing) -> None:
        """Push each partition held here to the nodes that have just become its
        primaries; a partition no longer ours goes to all its primaries, then is
        dropped. Members learn of each other one by one, so a node may be handed a
        partition it does not own: `on_handoff` runs this again to pass it on."""
        me = self.node.name
        for part in list(self.data):
            if self.ring is not new or self.closed:
                return  # the members changed again (the newer run takes over), or leaving
            after = partition_nodes(new, part, self.n)
            before = partition_nodes(old, part, self.n) if len(old) else []
            ours = me in after
            targets = [p for p in after if p != me and (not ours or p not in before)]
            table = self.data.get(part)
            if not table or not targets:
                continue
            items = list(table.items())
            ok = True
            for target in targets:  # a primary that is down gets it by hints or repair
                ok = target in self.up() and await self._push(target, items) and ok
            if not ours and ok and self.ring is new and self.data.get(part) is table:
                del self.data[part]  # handed over: no longer ours

    async def leave(self) -> None:
        """Hand every partition to its primaries without this node, then say goodbye."""
        if self.closed:
            return
        self.closed = True
        rest = self.known - {self.node.name}
        up = self.up()
        if rest:
            ring = HashRing(rest, vnodes=64)
            by_target: dict[str, list[tuple[Key, Siblings]]] = {}
            for part, table in self.data.items():
                for target in partition_nodes(ring, part, self.n):
                    by_target.setdefault(target, []).extend(table.items())
            for name, table2 in self.hints.items():
                by_target.setdefault(name, []).extend((k, s) for (_, k), s in table2.items())
            await asyncio.gather(
                *(self._push(t, items, leaving=True) for t, items in by_target.items() if t in up)
            )
            for name in sorted(rest & up):
                self.cast(name, "kv.leave", [])
        self.stop()

    def stop(self) -> None:
        self.closed = True
        for task in list(self.tasks):
            task.cancel()


def _fields(body: Any, count: int, op: str, sender: str) -> list[Any]:
    if type(body) is not list or len(body) != count:
        raise DataError(f"{op} from {sender}: expected {count} fields, got {body!r}")
    return body


def check_hint(value: Any) -> str | None:
    """A target's `hint_for`: the down primary's name, or None for a primary."""
    if value is not None and (type(value) is not str or not value):
        raise DataError(f"a hint names a node (a str) or is null, got {value!r}")
    return value


def live_keys(answers: Iterable[list[Any]], decode: Any = decode_siblings) -> list[Key]:
    """The keys with a live value in the union of `kv.keys` answers."""
    merged: dict[Any, Siblings] = {}
    for answer in answers:
        if type(answer) is not list:
            raise DataError("a kv.keys answer is a list of [key, siblings]")
        for item in answer:
            if type(item) is not list or len(item) != 2:
                raise DataError(f"a kv.keys item is [key, siblings], got {item!r}")
            try:
                key = check_key(item[0])
            except KeyTypeError as exc:
                raise DataError(f"bad store key: {exc}") from None
            siblings = decode(item[1])
            old = merged.get(key)
            merged[key] = siblings if old is None else old.sync(siblings)
    return [key for key, s in merged.items() if s.values()]
