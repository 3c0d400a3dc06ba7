"""An add-wins last-write-wins map as a delta-state CRDT (DeltaCrdt's AWLWWMap), pure.

Every write is a *dot* ``(replica, counter)``. A replica's state is, per key, the dots
still alive with their ``(value, stamp)``, plus a *causal context*: every dot it has
ever seen (a version vector plus the few dots beyond it, the "cloud").

- ``put(k, v)`` makes a fresh dot and retires every dot of ``k`` it has seen;
  ``delete(k)`` only retires them. Both return the *delta*: the new entry (if any)
  and, as its context, exactly the dots it made or retired.
- ``join`` keeps a dot if both sides have it, or if one side has it and the other
  has never seen it. A delete retires only the dots it saw, so a concurrent put
  survives it (add wins). Join is commutative, associative and idempotent, so
  replicas converge whatever the order or duplication of the deltas they receive.
- Several dots of one key survive only when their puts were concurrent; the visible
  value is the one with the highest ``(stamp, replica, counter)``. Stamps are a
  Lamport clock (the highest stamp seen, plus one), so no wall clock is involved.

There are no per-key tombstones: a retired dot is gone from the entries and lives on
only in the causal context, which compacts into the version vector as soon as the
gaps are filled, i.e. once a replica has seen every write before it. After a full
exchange every replica holds just its live entries and one counter per writer.

A *scope* limits which keys a join may retire dots from: a delta touches only its
own keys (its context holds no other dots), so joining it costs O(delta), not
O(map). A full state has no scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from zmesh.core.ring import Key

__all__ = ["CausalContext", "Dot", "MapState"]

Dot: TypeAlias = tuple[str, int]
Entry: TypeAlias = tuple[Any, int]  # (value, stamp)
#: Keys a join may retire dots from: None (all) or a delta's keys.
Scope: TypeAlias = frozenset[Key] | None


@dataclass
class CausalContext:
    """Every dot seen: ``vv[r]`` covers dots ``(r, 1..vv[r])``; `cloud` holds the rest."""

    vv: dict[str, int] = field(default_factory=dict)
    cloud: set[Dot] = field(default_factory=set)

    def __contains__(self, dot: Dot) -> bool:
        return dot[1] <= self.vv.get(dot[0], 0) or dot in self.cloud

    def add(self, dot: Dot) -> None:
        """Record `dot` as seen, compacting it into the vector when it is the next one."""
        replica, n = dot
        top = self.vv.get(replica, 0)
        if n == top + 1:
            self.vv[replica] = n
            self._compact(replica)
        elif n > top:
            self.cloud.add(dot)

    def next_dot(self, replica: str) -> Dot:
        """The dot of `replica`'s next write (its own dots are always contiguous)."""
        return (replica, self.vv.get(replica, 0) + 1)

    def join(self, other: CausalContext) -> None:
        """Union with `other`, in place."""
        vv = self.vv
        raised = []
        for replica, n in other.vv.items():
            if n > vv.get(replica, 0):
                vv[replica] = n
                raised.append(replica)
        touched = set()
        for dot in other.cloud:
            if dot[1] > vv.get(dot[0], 0):
                self.cloud.add(dot)
                touched.add(dot[0])
        for replica in raised:
            self._compact(replica, raised=True)
        for replica in touched.difference(raised):
            self._compact(replica)

    def _compact(self, replica: str, *, raised: bool = False) -> None:
        """Fold the cloud's dots that continue the vector into it. The cloud never
        holds a dot the vector covers, so only a vector `raised` by a join may have
        overtaken some: those are dropped too (a scan, done only then)."""
        cloud = self.cloud
        if not cloud:
            return
        if raised:
            top = self.vv.get(replica, 0)
            cloud.difference_update([d for d in cloud if d[0] == replica and d[1] <= top])
        n = self.vv.get(replica, 0)
        while (replica, n + 1) in cloud:
            n += 1
            cloud.discard((replica, n))
        if n:
            self.vv[replica] = n

    def dots(self) -> int:
        """How many dots are held beyond the vector (the memory a gap costs)."""
        return len(self.cloud)

    def copy(self) -> CausalContext:
        return CausalContext(dict(self.vv), set(self.cloud))


def _winner(dots: dict[Dot, Entry]) -> Entry:
    if len(dots) == 1:  # nearly always: several dots only after concurrent puts
        for entry in dots.values():
            return entry
    best = max(dots, key=lambda d: (dots[d][1], d[0], d[1]))
    return dots[best]


class MapState:
    """One replica of the map (or a delta of one: the same shape with a scope)."""

    __slots__ = ("context", "entries", "scope", "stamp")

    def __init__(self) -> None:
        self.entries: dict[Key, dict[Dot, Entry]] = {}
        self.context = CausalContext()
        self.stamp = 0  # the highest stamp seen (the Lamport clock)
        self.scope: Scope = None

    # -- reading --------------------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        dots = self.entries.get(key)
        return _winner(dots)[0] if dots else default

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> Iterator[Key]:
        return iter(self.entries)

    def items(self) -> list[tuple[Key, Any]]:
        return [(key, _winner(dots)[0]) for key, dots in self.entries.items()]

    def to_dict(self) -> dict[Key, Any]:
        return dict(self.items())

    def dot_count(self) -> int:
        """Dots alive in the entries (equals `len` unless puts were concurrent)."""
        return sum(map(len, self.entries.values()))

    # -- writing (each returns the delta to ship) -------------------------------------------

    def put(self, replica: str, key: Key, value: Any) -> MapState:
        """Write `key` = `value` here as `replica`; return the delta (already applied)."""
        delta = MapState()
        dot = self.context.next_dot(replica)
        self.stamp += 1
        delta.stamp = self.stamp
        delta.entries[key] = {dot: (value, self.stamp)}
        for old in self.entries.get(key, {}):
            delta.context.add(old)
        delta.context.add(dot)
        delta.scope = frozenset((key,))
        self.join(delta)
        return delta

    def delete(self, replica: str, key: Key) -> MapState | None:
        """Remove `key` here; return the delta (already applied), or None if absent."""
        dots = self.entries.get(key)
        if not dots:
            return None
        delta = MapState()
        delta.stamp = self.stamp
        for old in dots:
            delta.context.add(old)
        delta.scope = frozenset((key,))
        self.join(delta)
        return delta

    # -- merging ----------------------------------------------------------------------------

    def _scoped_keys(self, other: MapState) -> Iterable[Key]:
        # In an order that does not depend on the hash seed: keys join and changes are
        # reported in it (and deterministic simulation replays runs exactly).
        theirs = other.entries
        scope = other.scope
        if scope is None:
            mine = self.entries
            return [*mine, *(key for key in theirs if key not in mine)]
        rest = scope.difference(theirs)
        return [*theirs, *(sorted(rest, key=repr) if len(rest) > 1 else rest)]

    def join(self, other: MapState) -> dict[Key, tuple[Any, Any]]:
        """Merge `other` (a state or a delta) into this replica.

        Returns the visible changes, ``{key: (old, new)}`` with None for absent.
        """
        changes: dict[Key, tuple[Any, Any]] = {}
        mine, ctx = self.entries, self.context
        theirs, their_ctx = other.entries, other.context
        for key in self._scoped_keys(other):
            here = mine.get(key)
            there = theirs.get(key)
            if here is not None and here == there:
                continue  # the same dots on both sides: nothing to keep or drop
            before = _winner(here)[0] if here else None
            kept: dict[Dot, Entry] = {}
            if here:
                for dot, entry in here.items():
                    if (there is not None and dot in there) or dot not in their_ctx:
                        kept[dot] = entry
            if there:
                for dot, entry in there.items():
                    if dot not in kept and dot not in ctx:
                        kept[dot] = entry
            if kept:
                mine[key] = kept
                after = _winner(kept)[0]
            else:
                mine.pop(key, None)
                after = None
            if bool(here) != bool(kept) or after != before:
                changes[key] = (before, after)
        ctx.join(their_ctx)
        if other.stamp > self.stamp:
            self.stamp = other.stamp
        return changes

    # -- copies --------------------------------------------------------------------

    def copy(self) -> MapState:
        new = MapState()
        new.entries = {key: dict(dots) for key, dots in self.entries.items()}
        new.context = self.context.copy()
        new.stamp = self.stamp
        new.scope = self.scope
        return new

    def __eq__(self, other: object) -> bool:
        """Same entries and context (the scope and the clock aside)."""
        if not isinstance(other, MapState):
            return NotImplemented
        return self.entries == other.entries and self.context == other.context

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MapState({self.to_dict()!r}, vv={self.context.vv!r})"
