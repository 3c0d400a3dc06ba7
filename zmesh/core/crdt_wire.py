"""The replicated map's states and deltas as codec-ready lists, and back (pure).

A state travels as ``[entries, vv, cloud, stamp, scope]``:

- entries: ``[[key, [[replica, counter, value, stamp], ...]], ...]``
- vv: ``[[replica, counter], ...]``; cloud: ``[[replica, counter], ...]``
- scope: None (a full state) or the list of keys a delta touches.

`decode_state` checks every field and raises DataError for anything else, so a
malformed message from a peer never reaches the merge.
"""

from __future__ import annotations

from typing import Any

from zmesh.core.crdt_map import CausalContext, Dot, Entry, MapState
from zmesh.core.ring import Key, encode_key
from zmesh.errors import DataError, KeyTypeError

__all__ = ["check_key", "decode_state", "encode_state"]

_MAX_COUNTER = 2**62


def check_key(key: Any) -> Key:
    """`key` if it is a map key (str, bytes, int or a tuple of those); else KeyTypeError."""
    if type(key) is str or type(key) is int or type(key) is bytes:  # the common case
        return key
    if type(key) is tuple and all(type(x) is str or type(x) is int or type(x) is bytes
                                  for x in key):  # fmt: skip
        return key  # a flat tuple of exact types: what encode_key would accept
    encode_key(key)
    return key  # type: ignore[no-any-return]


def encode_state(state: MapState) -> list[Any]:
    entries = [
        [key, [[r, n, value, stamp] for (r, n), (value, stamp) in dots.items()]]
        for key, dots in state.entries.items()
    ]
    ctx = state.context
    # Sets in a stable order: the same state encodes to the same bytes whatever the
    # hash seed (deterministic simulation compares runs byte for byte).
    scope = None if state.scope is None else sorted(state.scope, key=repr)
    return [entries, [[r, n] for r, n in ctx.vv.items()], [list(d) for d in sorted(ctx.cloud)],
            state.stamp, scope]  # fmt: skip


def _counter(value: Any) -> int:
    if type(value) is not int or not 0 < value < _MAX_COUNTER:
        raise DataError(f"a counter must be an int in [1, 2**62), got {value!r}")
    return value


def _replica(value: Any) -> str:
    if type(value) is not str or not value:
        raise DataError(f"a replica id must be a non-empty str, got {value!r}")
    return value


def _key(value: Any) -> Key:
    try:
        return check_key(value)
    except KeyTypeError as exc:
        raise DataError(f"bad map key: {exc}") from None


def _dot(value: Any) -> Dot:
    if type(value) is not list or len(value) != 2:
        raise DataError(f"a dot is [replica, counter], got {value!r}")
    return (_replica(value[0]), _counter(value[1]))


def decode_state(wire: Any) -> MapState:
    """The MapState `wire` describes; DataError if it is malformed in any way."""
    if type(wire) is not list or len(wire) != 5:
        raise DataError("a map state is [entries, vv, cloud, stamp, scope]")
    entries, vv, cloud, stamp, scope = wire
    if type(entries) is not list or type(vv) is not list or type(cloud) is not list:
        raise DataError("map state entries, vv and cloud must be lists")
    state = MapState()
    state.stamp = 0 if stamp == 0 else _counter(stamp)
    for item in entries:
        if type(item) is not list or len(item) != 2 or type(item[1]) is not list:
            raise DataError(f"a map entry is [key, dots], got {item!r}")
        key = _key(item[0])
        dots: dict[Dot, Entry] = {}
        for d in item[1]:
            if type(d) is not list or len(d) != 4:
                raise DataError(f"an entry dot is [replica, counter, value, stamp], got {d!r}")
            r, n, stamp_ = d[0], d[1], d[3]
            if not (type(r) is str and r and type(n) is int and 0 < n < _MAX_COUNTER
                    and type(stamp_) is int and 0 < stamp_ < _MAX_COUNTER):  # fmt: skip
                _replica(r), _counter(n), _counter(stamp_)  # the error that says which
            dots[(r, n)] = (d[2], stamp_)
        if dots:
            state.entries[key] = dots
        elif scope is None:
            raise DataError(f"a full state holds no empty entry, got one for {key!r}")
    ctx = CausalContext()
    for pair in vv:
        r, n = _dot(pair)
        ctx.vv[r] = max(n, ctx.vv.get(r, 0))
    for pair in cloud:
        ctx.add(_dot(pair))
    state.context = ctx
    for dots in state.entries.values():
        for dot in dots:
            if dot not in ctx:
                raise DataError(f"dot {dot} is not in the state's own context")
    if scope is not None:
        if type(scope) is not list:
            raise DataError(f"a delta's scope is a list of keys, got {scope!r}")
        keys = frozenset(_key(k) for k in scope)
        if not keys >= state.entries.keys():
            raise DataError("a delta holds entries outside its scope")
        state.scope = keys
    return state
