"""A consistent-hash ring (libring's analogue), pure and deterministic.

Each node gets `weight * vnodes` points on a 64-bit circle, at xxh3_64 of the node's
name and the point's index; a key belongs to the first point clockwise from the
key's hash. Placement depends only on names, weights and vnodes: never on
PYTHONHASHSEED, the platform or the Python version.

Keys are hashed from a canonical encoding, so that "1", b"1" and 1 are different keys:

    str    b"s" + UTF-8 bytes
    bytes  b"b" + the bytes
    int    b"i" + signed big-endian two's complement, minimal length
    tuple  b"t" + item count (4 bytes) + each item as (length (4 bytes) + encoding)

Booleans are refused (True == 1 in Python, which would make them ambiguous), as is
any other type.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import xxhash

from zmesh.errors import ConfigError, EmptyRing

Key: TypeAlias = str | bytes | int | tuple["Key", ...]

_hash = xxhash.xxh3_64_intdigest


def encode_key(key: Key) -> bytes:
    """The canonical bytes of `key` (see the module docstring); ConfigError for others."""
    kind = type(key)
    if kind is str:
        return b"s" + key.encode()  # type: ignore[union-attr]
    if kind is bytes:
        return b"b" + key  # type: ignore[operator]
    if kind is int:
        n: int = key  # type: ignore[assignment]
        return b"i" + n.to_bytes((n + (n < 0)).bit_length() // 8 + 1, "big", signed=True)
    if kind is tuple:
        parts = [encode_key(item) for item in key]  # type: ignore[union-attr]
        out = [b"t", len(parts).to_bytes(4, "big")]
        for part in parts:
            out.append(len(part).to_bytes(4, "big"))
            out.append(part)
        return b"".join(out)
    raise ConfigError(
        f"ring keys are str, bytes, int or tuples of those, got {kind.__name__}: {key!r}"
    )


def hash_key(key: Key) -> int:
    """The key's position on the ring."""
    if type(key) is str:  # the common case, without building the canonical bytes twice
        return _hash(b"s" + key.encode())
    return _hash(encode_key(key))


def _points(name: str, count: int) -> list[int]:
    base = name.encode() + b"\x00"
    return [_hash(base + i.to_bytes(4, "big")) for i in range(count)]


class HashRing:
    """Nodes with integer weights on a consistent-hash ring.

    `add_node` and `remove_node` change the ring in place; lookups are O(log points).
    Adding a node moves only the keys that now belong to it; removing one moves only
    its own keys.
    """

    __slots__ = ("_hashes", "_owners", "_vnodes", "_weights")

    def __init__(self, nodes: Iterable[str] | Mapping[str, int] = (), *, vnodes: int = 128) -> None:
        if not isinstance(vnodes, int) or isinstance(vnodes, bool) or vnodes < 1:
            raise ConfigError(f"vnodes must be an int >= 1, got {vnodes!r}")
        self._vnodes = vnodes
        self._weights: dict[str, int] = {}
        self._hashes: list[int] = []
        self._owners: dict[int, str] = {}
        items = nodes.items() if isinstance(nodes, Mapping) else ((n, 1) for n in nodes)
        pairs: list[tuple[int, str]] = []
        for name, weight in items:
            self._check(name, weight)
            self._weights[name] = weight
            pairs.extend((h, name) for h in _points(name, weight * vnodes))
        self._rebuild(pairs)

    @staticmethod
    def _check(name: object, weight: object) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"node names are non-empty str, got {name!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigError(f"weight of {name!r} must be an int >= 1, got {weight!r}")

    def _rebuild(self, pairs: list[tuple[int, str]]) -> None:
        owners: dict[int, str] = {}
        for h, name in pairs:
            # Two points with one hash (1 in 2**64): the smaller name wins, deterministically.
            current = owners.get(h)
            if current is None or name < current:
                owners[h] = name
        self._owners = owners
        self._hashes = sorted(owners)

    # -- membership --------------------------------------------------------------------

    def add_node(self, name: str, weight: int = 1) -> None:
        """Add `name` (or change its weight)."""
        self._check(name, weight)
        if name in self._weights:
            self.remove_node(name)
        self._weights[name] = weight
        owners, hashes = self._owners, self._hashes
        for h in _points(name, weight * self._vnodes):
            current = owners.get(h)
            if current is None:
                owners[h] = name
                insort(hashes, h)
            elif name < current:
                owners[h] = name

    def remove_node(self, name: str) -> None:
        """Remove `name`; ConfigError if it is not on the ring."""
        if name not in self._weights:
            raise ConfigError(f"{name!r} is not on the ring (nodes: {self.nodes})")
        del self._weights[name]
        # A full rebuild: exact even if `name` had won a (1 in 2**64) point collision.
        vnodes = self._vnodes
        self._rebuild([(h, n) for n, w in self._weights.items() for h in _points(n, w * vnodes)])

    # -- lookups -----------------------------------------------------------------------

    def key_to_node(self, key: Key) -> str:
        """The node that owns `key`; EmptyRing if the ring has no nodes."""
        hashes = self._hashes
        if not hashes:
            raise EmptyRing(f"no node on the ring to place {key!r}")
        i = bisect_right(hashes, hash_key(key))
        return self._owners[hashes[i if i < len(hashes) else 0]]

    def key_to_nodes(self, key: Key, n: int) -> list[str]:
        """Up to `n` distinct nodes for `key`, clockwise from its position (wrapping
        around); the first is `key_to_node(key)`. Fewer only if the ring has fewer."""
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"n must be an int >= 0, got {n!r}")
        hashes = self._hashes
        if not hashes:
            raise EmptyRing(f"no node on the ring to place {key!r}")
        want = min(n, len(self._weights))
        out: list[str] = []
        start = bisect_right(hashes, hash_key(key))
        size = len(hashes)
        owners = self._owners
        for step in range(size):
            name = owners[hashes[(start + step) % size]]
            if name not in out:
                out.append(name)
                if len(out) == want:
                    break
        return out

    # -- the rest ----------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return sorted(self._weights)

    @property
    def weights(self) -> dict[str, int]:
        return dict(self._weights)

    @property
    def vnodes(self) -> int:
        return self._vnodes

    def copy(self) -> HashRing:
        new = HashRing.__new__(HashRing)
        new._vnodes = self._vnodes
        new._weights = dict(self._weights)
        new._owners = dict(self._owners)
        new._hashes = list(self._hashes)
        return new

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, name: object) -> bool:
        return name in self._weights

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashRing):
            return NotImplemented
        return self._weights == other._weights and self._vnodes == other._vnodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        if all(w == 1 for w in self._weights.values()):
            nodes: object = self.nodes
        else:
            nodes = {n: self._weights[n] for n in self.nodes}
        return f"HashRing({nodes!r}, vnodes={self._vnodes})"
