"""Version vectors, and the sibling values of one key kept with dotted version vectors.

A version vector maps a writer to how many of its writes are known. ``descends(a, b)``
means `a` has seen all of `b`; two vectors neither of which descends the other are
concurrent. `merge` is their least upper bound.

`Siblings` is the value of one key in the partitioned store (Riak's object): every
write is a *dot* ``(writer, n)`` together with the context the writer had read (a
version vector). A write supersedes exactly the siblings whose dots its context
covers, so a blind write (empty context) never silently drops a concurrent one:
both are kept, as siblings, until a write whose context covers both resolves them.
`sync` merges two replicas of a key and is commutative, associative and idempotent.
A delete is a write of the `TOMBSTONE` marker, so it replicates and syncs the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, TypeAlias

__all__ = [
    "TOMBSTONE",
    "Siblings",
    "VersionVector",
    "concurrent",
    "descends",
    "merge",
]

VersionVector: TypeAlias = Mapping[str, int]
Dot: TypeAlias = tuple[str, int]


class _Tombstone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


#: The value of a deleted key (a sibling like any other until superseded).
TOMBSTONE: Final = _Tombstone()


def descends(a: VersionVector, b: VersionVector) -> bool:
    """True if `a` has seen every write `b` has (``a >= b`` entry by entry)."""
    return all(a.get(writer, 0) >= n for writer, n in b.items())


def concurrent(a: VersionVector, b: VersionVector) -> bool:
    """True if neither vector descends the other."""
    return not descends(a, b) and not descends(b, a)


def merge(*vectors: VersionVector) -> dict[str, int]:
    """The least upper bound: the highest count of every writer."""
    out: dict[str, int] = {}
    for vector in vectors:
        for writer, n in vector.items():
            if n > out.get(writer, 0):
                out[writer] = n
    return out


def _covers(vector: VersionVector, dot: Dot) -> bool:
    return vector.get(dot[0], 0) >= dot[1]


class Sibling(NamedTuple):
    """One write: its dot, the context its writer had read, and the value."""

    dot: Dot
    context: tuple[tuple[str, int], ...]  # a version vector, sorted, hashable
    value: Any

    def context_vv(self) -> dict[str, int]:
        return dict(self.context)


class Siblings:
    """The concurrent writes of one key that no later write has superseded."""

    # `_items` maps each dot to its write, except that the set of one write made by
    # `of` or `add` (nearly every key of a store) holds that Sibling alone: one object
    # less per key and replica for the garbage collector to visit (the dict).
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Sibling] = ()) -> None:
        table: dict[Dot, Sibling] = {}
        for item in items:
            table[item.dot] = item
        self._items: dict[Dot, Sibling] | Sibling = table
        self._prune()

    @classmethod
    def of(cls, sibling: Sibling) -> Siblings:
        """The set of one write (``Siblings([sibling])``, without the general prune)."""
        new = cls.__new__(cls)
        if sibling.context and _covers(dict(sibling.context), sibling.dot):
            new._items = {}
        else:
            new._items = sibling
        return new

    def _map(self) -> dict[Dot, Sibling]:
        items = self._items
        if isinstance(items, dict):
            return items
        return {items.dot: items}

    # -- reading ----------------------------------------------------------------------------

    def values(self) -> list[Any]:
        """The live values (tombstones left out), in dot order."""
        return [s.value for _, s in sorted(self._map().items()) if s.value is not TOMBSTONE]

    def items(self) -> list[Sibling]:
        return [s for _, s in sorted(self._map().items())]

    def context(self) -> dict[str, int]:
        """What a reader has seen: pass it back to `write` to supersede these siblings."""
        items = self._map()
        out = merge(*(s.context_vv() for s in items.values()))
        for writer, n in items:
            if n > out.get(writer, 0):
                out[writer] = n
        return out

    def __len__(self) -> int:
        items = self._items
        return len(items) if isinstance(items, dict) else 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Siblings):
            return NotImplemented
        return self._map() == other._map()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Siblings({self.items()!r})"

    # -- writing ----------------------------------------------------------------------------

    def write(self, dot: Dot, context: VersionVector, value: Any) -> Sibling:
        """Record the write `dot` of a writer that had read `context`; return it.

        Dots must be unique: a writer numbers its writes itself (the store's
        coordinator keeps one counter per incarnation of its node).
        """
        sibling = Sibling(dot, tuple(sorted(context.items())), value)
        items = self._items = self._map()  # the table itself, or one made for a lone write
        items[sibling.dot] = sibling
        self._prune()
        return sibling

    def sync(self, other: Siblings) -> Siblings:
        """The merge of two replicas of the key (a new object)."""
        return Siblings([*self._map().values(), *other._map().values()])

    def add(self, sibling: Sibling) -> Siblings:
        """The merge with one write, ``self.sync(Siblings.of(sibling))`` (a new object).

        The usual overwrite, a write that had read the one sibling held here, takes
        no general prune: the write alone survives."""
        held = self._items
        context = sibling.context
        if context and isinstance(held, tuple) and held.dot != sibling.dot:
            dot = held.dot
            read = dict(context)
            if (read.get(dot[0], 0) >= dot[1] and not _covers(read, sibling.dot)
                    and not _covers(dict(held.context), sibling.dot)):  # fmt: skip
                new = Siblings.__new__(Siblings)
                new._items = sibling
                return new
        return Siblings([*self._map().values(), sibling])

    def _prune(self) -> None:
        items = self._items
        assert isinstance(items, dict)
        if len(items) < 2:  # the common case: one write, pruned only by its own context
            for only in items.values():
                if only.context and _covers(dict(only.context), only.dot):
                    items.clear()
                break
            return
        contexts = [s.context_vv() for s in items.values()]
        dead = [dot for dot in items if any(_covers(c, dot) for c in contexts)]
        for dot in dead:
            del items[dot]
