"""The partitioned store's sibling sets as codec-ready lists, and back (pure).

A sibling set travels as ``[[writer, n, context, value, deleted], ...]`` where
`context` is ``[[writer, n], ...]`` and `deleted` says the value is the tombstone.
`decode_siblings` refuses anything else with DataError.
"""

from __future__ import annotations

from typing import Any

from zmesh.core.version_vector import TOMBSTONE, Sibling, Siblings
from zmesh.errors import DataError

__all__ = ["decode_sibling", "decode_siblings", "encode_sibling", "encode_siblings"]

_MAX = 2**62

#: `Sibling(...)` without the namedtuple's Python-level __new__ (every write decodes one).
_new_sibling = tuple.__new__


def encode_sibling(s: Sibling) -> list[Any]:
    deleted = s.value is TOMBSTONE
    return [s.dot[0], s.dot[1], [list(p) for p in s.context], None if deleted else s.value,
            deleted]  # fmt: skip


def encode_siblings(siblings: Siblings) -> list[Any]:
    return [encode_sibling(s) for s in siblings.items()]


def _writer(value: Any) -> str:
    if type(value) is not str or not value:
        raise DataError(f"a writer is a non-empty str, got {value!r}")
    return value


def _count(value: Any) -> int:
    if type(value) is not int or not 0 < value < _MAX:
        raise DataError(f"a write count is an int in [1, 2**62), got {value!r}")
    return value


def decode_sibling(wire: Any) -> Sibling:
    if type(wire) is not list or len(wire) != 5:
        raise DataError(f"a sibling is [writer, n, context, value, deleted], got {wire!r}")
    writer, n, context, value, deleted = wire
    if type(context) is not list or type(deleted) is not bool:
        raise DataError(f"a sibling's context is a list and deleted a bool: {wire!r}")
    if type(writer) is not str or not writer or type(n) is not int or not 0 < n < _MAX:
        _writer(writer)
        _count(n)
    if not context:  # a first write of the key: nothing to check or sort
        return _new_sibling(Sibling, ((writer, n), (), TOMBSTONE if deleted else value))
    pairs: dict[str, int] = {}
    for pair in context:
        if type(pair) is not list or len(pair) != 2:
            raise DataError(f"a context entry is [writer, n], got {pair!r}")
        pairs[_writer(pair[0])] = _count(pair[1])
    return Sibling((writer, n), tuple(sorted(pairs.items())), TOMBSTONE if deleted else value)


def decode_siblings(wire: Any) -> Siblings:
    if type(wire) is not list:
        raise DataError(f"a sibling set is a list, got {wire!r}")
    return Siblings(decode_sibling(item) for item in wire)
