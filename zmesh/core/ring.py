"""A consistent-hash ring: libring's `HashRing` as a plain Python object.

Placement is a pure function of the node names, their weights and `vnodes`. It never
depends on insertion order, PYTHONHASHSEED, the platform or the Python version, so
every process that agrees on the membership agrees on where each key lives.

Positions are unsigned 64-bit integers on a circle (xxh3_64, never `hash()`):

- point ``i`` of node ``name`` (``0 <= i < weight * vnodes``) sits at
  ``xxh3_64(utf8(name), seed=i)``; raising a node's weight only adds points;
- a key sits at ``xxh3_64(encode_key(key))`` and belongs to the node owning the first
  point at or after it, wrapping past 2**64 - 1 to the lowest point;
- two points at one position (odds about 2**-64 per pair): the smallest name owns it.

The canonical key encoding ``encode_key`` is a one-byte type tag and a payload:

====== ==== ==========================================================================
type   tag  payload
====== ==== ==========================================================================
str    s    UTF-8 (lone surrogates as their 3-byte form, i.e. ``surrogatepass``)
bytes  b    the bytes themselves
int    i    two's complement, big-endian, signed, in the fewest bytes (0 is ``00``)
tuple  t    the item count (8 bytes, big-endian), then per item: the length of its
            encoding (8 bytes, big-endian) and the encoding itself
====== ==== ==========================================================================

A top-level encoding needs no length (it is the whole input) and tuple items are
length-prefixed, so distinct keys have distinct encodings: ``"1"``, ``b"1"``, ``1``
and ``("1",)`` are four different keys. Subclasses of str, bytes and int (``StrEnum``,
``IntEnum``) encode as their base value, as Python equality would have it. ``bool`` is
refused even though it is an int: ``True == 1`` would silently merge two keys a caller
most likely meant to keep apart. Anything else raises `KeyTypeError`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import ClassVar, TypeAlias

import xxhash

from zmesh.errors import ConfigError, EmptyRing, KeyTypeError

__all__ = ["HashRing", "Key", "KeyTypeError", "encode_key", "hash_key"]

Key: TypeAlias = str | bytes | int | tuple["Key", ...]

_xxh3 = xxhash.xxh3_64_intdigest


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from os.fsdecode) still get a stable, distinct encoding.
        return text.encode("utf-8", "surrogatepass")


def _int_bytes(n: int) -> bytes:
    # Bits of the magnitude plus a sign bit, rounded up to whole bytes.
    return n.to_bytes((n if n >= 0 else ~n).bit_length() // 8 + 1, "big", signed=True)


def encode_key(key: Key) -> bytes:
    """The canonical encoding of `key` (see the module docstring).

    Equal keys give equal bytes and distinct keys distinct bytes. Raises KeyTypeError
    for a bool or any type other than str, bytes, int and tuples of those.
    """
    kind = type(key)
    if kind is str:
        return b"s" + _utf8(key)  # type: ignore[arg-type]
    if kind is bytes:
        return b"b" + key  # type: ignore[operator]
    if kind is int:
        return b"i" + _int_bytes(key)  # type: ignore[arg-type]
    if kind is tuple:
        out = [b"t", len(key).to_bytes(8, "big")]  # type: ignore[arg-type]
        for item in key:  # type: ignore[union-attr]
            encoded = encode_key(item)
            out.append(len(encoded).to_bytes(8, "big"))
            out.append(encoded)
        return b"".join(out)
    # Subclasses: checked after the exact types, which are what nearly every call uses.
    if isinstance(key, bool):
        raise KeyTypeError(f"bool ring keys are refused (True == 1 would alias): {key!r}")
    if isinstance(key, str):
        return b"s" + _utf8(str(key))
    if isinstance(key, bytes):
        return b"b" + bytes(key)
    if isinstance(key, int):
        return b"i" + _int_bytes(int(key))
    if isinstance(key, tuple):
        return encode_key(tuple(key))
    raise KeyTypeError(
        f"ring keys are str, bytes, int or tuples of those, got {kind.__name__}: {key!r}"
    )


def hash_key(key: Key) -> int:
    """The key's position on the ring: xxh3_64 of `encode_key(key)`, in [0, 2**64)."""
    if type(key) is str:
        # The hot path: one encode, one concatenation, no call into encode_key.
        try:
            return _xxh3(b"s" + key.encode())
        except UnicodeEncodeError:
            pass
    return _xxh3(encode_key(key))


def _points(name: str, count: int) -> list[int]:
    """The positions of a node's first `count` points."""
    data = _utf8(name)
    return [_xxh3(data, i) for i in range(count)]


def _check_int(what: str, value: object) -> int:
    # bool is an int subclass; `weight=True` is a mistake, not 1.
    if type(value) is not int or value < 1:
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")
    return value


class HashRing:
    """Named nodes with integer weights on a consistent-hash ring.

    A node of weight ``w`` gets ``w * vnodes`` points, so it owns about ``w / W`` of
    the key space (``W`` the total weight). Adding a node moves keys only onto it;
    removing one moves only its keys; adding then removing a node restores every
    placement exactly. `add_node` and `remove_node` change the ring in place; use
    `copy` to keep the old one. Lookups take O(log points).

    Raises ConfigError for a node name that is not a non-empty str, or a weight or
    `vnodes` that is not an int >= 1. A str or bytes `nodes` argument is refused (it
    would be a ring of its characters); a name listed twice is added once.
    """

    __slots__ = ("_clashes", "_hashes", "_owners", "_vnodes", "_weights")

    __hash__: ClassVar[None]  # type: ignore[assignment]  # mutable, so not hashable

    def __init__(self, nodes: Iterable[str] | Mapping[str, int] = (), *, vnodes: int = 128) -> None:
        self._vnodes = _check_int("vnodes", vnodes)
        if isinstance(nodes, str | bytes):
            raise ConfigError(f"nodes must be an iterable of names, not a single {nodes!r}")
        pairs: Iterable[tuple[str, int]]
        pairs = nodes.items() if isinstance(nodes, Mapping) else ((name, 1) for name in nodes)
        weights: dict[str, int] = {}
        for name, weight in pairs:
            self._check_name(name)
            weights[name] = _check_int(f"the weight of {name!r}", weight)
        self._weights = weights
        self._rebuild()

    # -- the point arrays -------------------------------------------------------------
    #
    # _hashes   the sorted point positions
    # _owners   the owner of each position in _hashes, plus a copy of the first owner at
    #           the end: bisect_left returns len(_hashes) past the last point, and the
    #           extra slot makes that wrap-around free. Empty when the ring is empty.
    # _clashes  how many points landed on an occupied position when last counted; while
    #           non-zero, membership changes rebuild from scratch so that the
    #           smallest-name rule is applied exactly, whatever the order of changes

    @staticmethod
    def _check_name(name: object) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"node names must be non-empty str, got {name!r}")

    def _rebuild(self) -> None:
        vnodes = self._vnodes
        owner_of: dict[int, str] = {}
        total = 0
        for name, weight in self._weights.items():
            points = _points(name, weight * vnodes)
            owner_of.update(zip(points, repeat(name)))
            total += len(points)
        clashes = total - len(owner_of)
        if clashes:
            owner_of = {}
            for name, weight in self._weights.items():
                for point in _points(name, weight * vnodes):
                    owner = owner_of.get(point)
                    if owner is None or name < owner:
                        owner_of[point] = name
        self._clashes = clashes
        self._hashes = sorted(owner_of)
        owners = list(map(owner_of.__getitem__, self._hashes))
        self._owners = [*owners, owners[0]] if owners else owners

    # -- membership -------------------------------------------------------------------

    def add_node(self, name: str, weight: int = 1) -> None:
        """Add `name` with `weight`, or change the weight of a node already there.

        Raises ConfigError (leaving the ring unchanged) for a bad name or weight.
        """
        self._check_name(name)
        _check_int(f"the weight of {name!r}", weight)
        old = self._weights.get(name)
        if old == weight:
            return
        if old is not None:
            self.remove_node(name)
        self._weights[name] = weight
        fresh = sorted(_points(name, weight * self._vnodes))
        if self._clashes or len(set(fresh)) != len(fresh):
            self._rebuild()
            return
        # Splice the new points into the sorted arrays: one bisect per new point and
        # slice copies, rather than re-sorting and re-indexing every point.
        hashes, owners = self._hashes, self._owners
        size = len(hashes)
        new_hashes: list[int] = []
        new_owners: list[str] = []
        done = 0
        for point in fresh:
            at = bisect_left(hashes, point, done, size)
            if at < size and hashes[at] == point:
                self._rebuild()  # a position already taken: let the rebuild arbitrate
                return
            new_hashes += hashes[done:at]
            new_hashes.append(point)
            new_owners += owners[done:at]
            new_owners.append(name)
            done = at
        new_hashes += hashes[done:size]
        new_owners += owners[done:size]
        new_owners.append(new_owners[0])
        self._hashes, self._owners = new_hashes, new_owners

    def remove_node(self, name: str) -> None:
        """Remove `name` from the ring. A name that is not on the ring is a no-op, so
        that repeated down events (or a remove racing a remove) need no guard."""
        if self._weights.pop(name, None) is None:
            return
        if self._clashes:
            self._rebuild()
            return
        # Without clashes a position belongs to `name` exactly when `name` owns it.
        owners = self._owners[:-1]
        pairs = zip(self._hashes, owners, strict=True)
        self._hashes = [point for point, owner in pairs if owner != name]
        owners = [owner for owner in owners if owner != name]
        self._owners = [*owners, owners[0]] if owners else owners

    # -- lookups ----------------------------------------------------------------------

    def key_to_node(self, key: Key) -> str:
        """The node that owns `key`.

        Raises EmptyRing if the ring has no nodes, KeyTypeError for an unsupported key.
        """
        if type(key) is str:
            try:
                position = _xxh3(b"s" + key.encode())
            except UnicodeEncodeError:
                position = hash_key(key)
        else:
            position = hash_key(key)
        try:
            return self._owners[bisect_left(self._hashes, position)]
        except IndexError:
            raise EmptyRing(f"no nodes on the ring to place {key!r}") from None

    def key_to_nodes(self, key: Key, n: int) -> list[str]:
        """`min(n, len(self))` distinct nodes for `key`, in ring order.

        Walks clockwise from the key's position, wrapping around past the top of the
        ring, so the first node is `key_to_node(key)` and the others are the next
        distinct owners (replicas). Raises ConfigError if `n` is not an int >= 0,
        EmptyRing if the ring has no nodes (even for ``n == 0``), KeyTypeError for an
        unsupported key.
        """
        if type(n) is not int or n < 0:
            raise ConfigError(f"n must be an int >= 0, got {n!r}")
        position = hash_key(key)
        hashes, owners = self._hashes, self._owners
        size = len(hashes)
        if not size:
            raise EmptyRing(f"no nodes on the ring to place {key!r}")
        want = min(n, len(self._weights))
        found: list[str] = []
        start = bisect_left(hashes, position)
        for step in range(start, start + size):
            if len(found) == want:
                break
            owner = owners[step % size]
            if owner not in found:  # a list: `want` is small, and it keeps ring order
                found.append(owner)
        return found

    # -- the rest ---------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """The node names, sorted."""
        return sorted(self._weights)

    @property
    def weights(self) -> dict[str, int]:
        """A snapshot of each node's weight, by name."""
        return {name: self._weights[name] for name in sorted(self._weights)}

    @property
    def vnodes(self) -> int:
        """Points per unit of weight."""
        return self._vnodes

    def copy(self) -> HashRing:
        """An independent ring with the same nodes, weights and placement."""
        new = HashRing.__new__(HashRing)
        new._vnodes = self._vnodes
        new._weights = dict(self._weights)
        new._clashes = self._clashes
        new._hashes = list(self._hashes)
        new._owners = list(self._owners)
        return new

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, name: object) -> bool:
        return name in self._weights

    def __eq__(self, other: object) -> bool:
        """Same nodes, weights and vnodes (hence the same placement of every key)."""
        if not isinstance(other, HashRing):
            return NotImplemented
        return self._vnodes == other._vnodes and self._weights == other._weights

    def __repr__(self) -> str:
        nodes: object = self.nodes
        if any(weight != 1 for weight in self._weights.values()):
            nodes = self.weights
        return f"HashRing({nodes!r}, vnodes={self._vnodes})"
