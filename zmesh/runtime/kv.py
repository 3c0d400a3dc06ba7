"""`KV`: a riak_core-style partitioned key-value store on the ring (the Dynamo design).

``kv = await node.kv_open("store", n=3, partitions=64)``: the keyspace is cut into
`partitions` vnodes placed on a ring of the store's members; each key lives on the
`n` distinct nodes of its partition's preference list (`key_to_nodes`).

- ``await kv.put(key, value, w=2)``: the first reachable node of the preference list
  coordinates (the call is forwarded to it when that is another node). It numbers
  the write with its own dot and, unless the caller passes the `context` it read,
  takes the context of the siblings it holds, so a plain put supersedes what its
  coordinator has seen; it writes to every target and returns once `w` have
  applied it (Unavailable otherwise). A down primary's share goes to the next
  node round the ring as a hint, delivered when the primary returns.
- ``await kv.get(key, r=2)``: reads `r` replicas (this node's own replica without a
  message when it is one, then the primaries) and returns the merge of their sibling
  sets; the other targets are asked too when a primary is down (its fallback stands
  in), when an asked replica is lost, or after `SPARE_AFTER` without the
  answers. A replica that answered behind the merge is repaired in the background
  (read repair). With ``w + r > n`` the `r` replicas read overlap the `w` that
  acknowledged a write, so a read after an acknowledged write returns it while at
  most ``n - w`` replicas are lost.
- Every read, write, forwarded put and answer between two nodes in one turn of the
  loop travels as one ``kv.batch`` envelope (`kv_batch`).
- ``await kv.delete(key)`` writes a tombstone, replicated like a value; once every
  member holds it (checked by the coordinator `REAP_AFTER` s later) it is collected
  everywhere (`kv_reaper`). A member out of reach keeps it from being collected.
- When a member is reachable again, the two nodes compare a digest per partition they
  share and swap the partitions that differ (`kv_sync`, anti-entropy).
- Concurrent writes are kept as siblings (dotted version vectors); `get` returns
  `resolve(values)` when the store has a resolver, else a `Conflict`. `fetch`
  returns every sibling and the context to write back with.
- ``await kv.keys()``: a coverage query over every reachable member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from zmesh.core.crdt_wire import check_key
from zmesh.core.kv_placement import Target, key_to_nodes
from zmesh.core.kv_wire import decode_siblings, encode_siblings
from zmesh.core.ring import Key
from zmesh.core.version_vector import TOMBSTONE, Siblings, VersionVector
from zmesh.errors import ConfigError, DataError, Unavailable, ZmeshError
from zmesh.runtime.kv_batch import Outbox
from zmesh.runtime.kv_gather import Fanout
from zmesh.runtime.kv_reaper import Reaper
from zmesh.runtime.kv_sync import AntiEntropy
from zmesh.runtime.kv_vnodes import Vnodes, live_keys
from zmesh.runtime.kv_write import SPARE_AFTER, Writes

if TYPE_CHECKING:
    from zmesh.runtime.kv_router import KVRouter

__all__ = ["KV", "Conflict", "Versioned"]


class Versioned(NamedTuple):
    """What `fetch` returns: the live sibling values and the context to write with."""

    values: list[Any]
    context: dict[str, int]


class Conflict(NamedTuple):
    """What `get` returns for concurrent writes when the store has no resolver: write
    the value you choose back with ``put(key, value, context=conflict.context)``."""

    values: list[Any]
    context: dict[str, int]


class KV:
    """One node's handle on the partitioned store `name` (from `node.kv_open`)."""

    def __init__(
        self,
        router: KVRouter,
        name: str,
        n: int,
        partitions: int,
        resolve: Callable[[list[Any]], Any] | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.n = n
        self.partitions = partitions
        self.timeout = timeout
        self._resolve = resolve
        self._router = router
        self._node = router.node
        self._codec = router.node._need_dist().codec
        self.vnodes = Vnodes(self._node, name, n, partitions)
        self.fanout = Fanout()
        self.outbox = Outbox(self.vnodes)
        self.reaper = Reaper(self)
        self.writes = Writes(self)
        self.sync = AntiEntropy(self)

    # -- placement ----------------------------------------------------------------

    def key_to_nodes(self, key: Key) -> list[str]:
        """The primaries of `key` on the store's ring (down members included)."""
        return key_to_nodes(self.vnodes.ring, check_key(key), self.n, self.partitions)

    def members(self) -> list[str]:
        """Every node that opened this store and has not left, this one included."""
        return sorted(self.vnodes.known)

    def _check(self, what: str, value: object) -> int:
        if type(value) is not int or not 1 <= value <= self.n:
            raise ConfigError(f"{what} must be an int in [1, n={self.n}], got {value!r}")
        return value

    # -- writes ----------------------------------------------------------------

    def put(
        self,
        key: Key,
        value: Any,
        *,
        w: int = 2,
        context: VersionVector | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Store `value` under `key` on `n` replicas; return once `w` have it (await it).

        Raises Unavailable if fewer than `w` applied it within `timeout`,
        KeyTypeError for a bad key, EncodeError for a value the codec cannot carry.
        """
        # The write's own coroutine, not one wrapping it: one frame less per put.
        return self._write(key, value, w, context, timeout)

    def delete(
        self,
        key: Key,
        *,
        w: int = 2,
        context: VersionVector | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Delete `key` (await it): a tombstone write, replicated like a put, and
        collected once every member holds it (see `kv_reaper`)."""
        return self._write(key, TOMBSTONE, w, context, timeout)

    async def _write(
        self, key: Key, value: Any, w: int, context: VersionVector | None, timeout: float | None
    ) -> None:
        check_key(key)
        if type(w) is not int or not 1 <= w <= self.n:
            self._check("w", w)
        timeout = self.timeout if timeout is None else timeout
        if value is not TOMBSTONE and not _plain(value):
            self._codec.encode(value)  # EncodeError here, not on a replica
        if context is not None:
            context = _check_context(context)
        v = self.vnodes
        part = v.partition(key)
        if not v.is_target(part):  # a target coordinates itself; else the first
            targets = v.targets(part)
            if not targets:  # pragma: no cover - this node is always up and a member
                raise Unavailable(f"store {self.name!r}: no node reachable for {key!r}")
            await self.writes.forward(targets[0].node, key, value, w, context, timeout)
            return
        write = self.writes.start(key, value, w, context, timeout, part)
        if write.gather is not None:
            try:
                await write.gather.future
            finally:
                write.gather.end()
        outcome = write.outcome()
        if isinstance(outcome, str):
            raise Unavailable(outcome)

    # -- reads ----------------------------------------------------------------

    async def fetch(self, key: Key, *, r: int = 2, timeout: float | None = None) -> Versioned:
        """Every live sibling value of `key` (empty if absent or deleted) and the
        context that supersedes them all. Raises Unavailable if fewer than `r` of the
        replicas answered within `timeout`."""
        merged = await self._read(key, r, timeout)
        return Versioned(merged.values(), merged.context())

    async def get(
        self, key: Key, default: Any = None, *, r: int = 2, timeout: float | None = None
    ) -> Any:
        """The value of `key`, `default` if absent; with concurrent siblings,
        `resolve(values)` if the store has a resolver, else a `Conflict`."""
        merged = await self._read(key, r, timeout)
        values = merged.values()
        if not values:
            return default
        if len(values) == 1:
            return values[0]
        if self._resolve is not None:
            return self._resolve(values)
        return Conflict(values, merged.context())

    async def _read(self, key: Key, r: int, timeout: float | None) -> Siblings:
        """Read `r` replicas (this node's first when it is one, then the primaries)
        and return the merge of their answers. The other targets are asked too when
        one is down (fallbacks stand in), when an asked one is lost, or when the
        answers are not all in after `SPARE_AFTER`; every replica that answered
        behind the merge of all answers is repaired (read repair)."""
        check_key(key)
        self._check("r", r)
        timeout = self.timeout if timeout is None else timeout
        v = self.vnodes
        part = v.partition(key)
        targets = v.targets(part)
        me = self._node.name
        answers: list[tuple[Target, Siblings]] = []
        remote: dict[str, Target] = {}
        for target in targets:
            if target.node == me:
                answers.append((target, v.held(key, target.hint_for, part)))
            else:
                remote[target.node] = target
        if not remote:
            self._repair(key, answers)
        else:

            def on_answer(node: str, payload: Any) -> bool:
                try:
                    answers.append((remote[node], decode_siblings(payload)))
                except DataError as exc:
                    v.refuse(f"read answer from {node}: {exc}")
                return len(answers) >= r

            def ask(node: str) -> None:
                self.outbox.add(node, ["r", g.op, key, remote[node].hint_for])

            nodes = list(remote)  # primaries first, as in `targets`
            degraded = len(targets) < self.n or any(t.hint_for for t in targets)
            first = nodes if degraded else nodes[: max(1, r - len(answers))]
            g = self.fanout.start(set(first), on_answer, timeout)
            g.on_end = lambda: self._repair(key, answers)
            if len(first) < len(nodes):
                g.keep_spare(nodes[len(first) :], ask, SPARE_AFTER)
            for node in first:
                ask(node)
            if len(answers) < r:
                await g.future
        if len(answers) < r:
            raise Unavailable(
                f"store {self.name!r}: {len(answers)} of {len(targets)} replicas answered "
                f"for {key!r}, r={r}"
            )
        return _merge(answers)

    def _repair(self, key: Key, answers: list[tuple[Target, Siblings]]) -> None:
        """Read repair: bring every replica that answered up to the merge of all."""
        if len(answers) < 2:
            return
        merged = _merge(answers)
        for target, siblings in answers:
            if siblings != merged:
                if target.node == self._node.name:
                    self.vnodes.merge(key, merged, target.hint_for)
                else:
                    self.vnodes.cast(target.node, "kv.repair", [key, encode_siblings(merged),
                                                                target.hint_for])  # fmt: skip

    async def keys(self, *, timeout: float | None = None) -> list[Key]:
        """Every key with a live value, from every reachable member (a coverage query).
        Raises Unavailable if a member does not answer within `timeout`."""
        timeout = self.timeout if timeout is None else timeout
        v = self.vnodes
        me = self._node.name
        peers = sorted(v.up() - {me})
        try:
            answers = await asyncio.gather(*(v.request(p, "kv.keys", [], timeout) for p in peers))
        except ZmeshError as exc:
            raise Unavailable(f"store {self.name!r}: coverage query failed: {exc}") from None
        return sorted(live_keys([v.on_keys(me, []), *answers]), key=repr)

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        """Leave the store gracefully: hand every partition held here to its next owners,
        then tell the members, which take this node off the store's ring."""
        await self.vnodes.leave()
        self.reaper.stop()
        self.fanout.stop()
        self._router.stores.pop(self.name, None)

    def forget(self, node: str) -> None:
        """Take `node`, a member that is gone for good (its data lost), off the store's
        ring everywhere: its partitions get new primaries, which the surviving replicas
        fill by ownership handoff, and its hints are dropped. Raises ConfigError for
        this node (use `close`) or a node that is connected (it must `close` itself)."""
        v = self.vnodes
        if node == self._node.name or node in self._node.nodes():
            raise ConfigError(f"{node!r} is this node or connected: it must close the store")
        if node not in v.known:
            return
        v.remove_member(node)
        for member in sorted(v.up() - {self._node.name}):
            v.cast(member, "kv.forget", [node])

    def stats(self) -> dict[str, int]:
        v = self.vnodes
        return {
            "keys": sum(len(t) for t in v.data.values()),
            "hints": sum(len(t) for t in v.hints.values()),
            "tombstones_reaped": self.reaper.reaped,
            **v.counters,
            **self.sync.counters,
        }

    def __repr__(self) -> str:
        return (
            f"<KV {self.name!r} on {self._node.name}: n={self.n}, {len(self.vnodes.known)} members>"
        )


def _plain(value: Any) -> bool:
    """Whether `value` is a scalar the codec surely packs (no need to try it first)."""
    kind = type(value)
    if kind is int:
        return -(2**63) <= value < 2**64  # type: ignore[no-any-return]
    if kind is str:
        return len(value) < 65536 and value.isascii()  # a lone surrogate cannot pack
    return kind is float or kind is bool or value is None


def _check_context(context: Any) -> dict[str, int]:
    if not hasattr(context, "items"):
        raise ConfigError(f"a context is the mapping fetch() returned, got {context!r}")
    out = {}
    for writer, n in context.items():
        if type(writer) is not str or type(n) is not int or n < 1:
            raise ConfigError(f"a context maps writers (str) to counts (int >= 1): {context!r}")
        out[writer] = n
    return out


def _merge(answers: list[tuple[Target, Siblings]]) -> Siblings:
    merged = answers[0][1]
    for _, siblings in answers[1:]:
        if siblings != merged:
            merged = merged.sync(siblings)
    return merged
