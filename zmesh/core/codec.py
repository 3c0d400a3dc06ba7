"""The term codec: msgpack plus ext types for Pid, Ref, tuple and the signal records.

`encode` raises `EncodeError` for anything it cannot represent; `decode` raises
`DecodeError` for every malformed input (truncated, trailing bytes, bad UTF-8,
an unknown ext code, a nesting or length over the limits), never a bare
ValueError/TypeError/IndexError. Decoding never builds a class by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, cast

import msgpack

from zmesh.errors import DecodeError, EncodeError
from zmesh.terms import Down, Exit, NameConflict, Pid, Ref, new_pid


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits applied while decoding (and to the size of what is encoded)."""

    max_size: int = 8 * 1024 * 1024
    # Far below the frame size: 1 MB of empty arrays decodes to ~70 MB of objects.
    max_container_len: int = 1_000_000
    max_str_len: int = 8 * 1024 * 1024
    max_depth: int = 64


DEFAULT_LIMITS: Final = Limits()

_CACHE_SIZE: Final = 4096  # pids remembered per codec; cleared whole when full

EXT_PID: Final = 1
EXT_REF: Final = 2
EXT_TUPLE: Final = 3
EXT_DOWN: Final = 4
EXT_EXIT: Final = 5
EXT_NAME_CONFLICT: Final = 6

_BASES: Final[tuple[type, ...]] = (bool, int, float, str, bytes, list, dict)
# Exact types packed by a Packer without hooks (subclasses go through `default`).
_SCALARS: Final = frozenset((bool, int, float, str, bytes))
_SCALAR_PACKER: Final = msgpack.Packer(strict_types=True)
#: `Ref(...)` without its generated `__new__`, for refs decoded by the thousand.
_new_tuple: Final = tuple.__new__


class Codec:
    """Encoder and decoder for one set of limits; safe to share, holds no buffers."""

    __slots__ = ("_ext_depth", "_limits", "_pack_depth", "_packers", "_pid_ext", "_pid_of")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._ext_depth = 0
        self._pack_depth = 0
        # A Packer is not re-entrant, and ext payloads are packed from inside `default`:
        # one reusable Packer per nesting level (a fresh Packer per ext cost 5x).
        self._packers: list[msgpack.Packer] = []
        # Pids recur in almost every envelope (callers, servers, monitors): their encoded
        # form is cached both ways, which took a remote call from 2.11x to ~2x raw pyzmq.
        self._pid_ext: dict[Pid, msgpack.ExtType] = {}
        self._pid_of: dict[bytes, Pid] = {}

    @property
    def limits(self) -> Limits:
        return self._limits

    # -- encoding -----------------------------------------------------------------

    def encode(self, value: object) -> bytes:
        """Pack `value`; raise `EncodeError` for unsupported types or an oversized result."""
        try:
            if type(value) is tuple:
                # Most messages are tuples: pack the ext header here instead of through
                # `default` and a second Packer call (a 3-tuple message: 1.6 -> 0.9 us).
                self._pack_depth = 1
                inner = self._pack(list(value))
                data = _ext_head(len(inner), EXT_TUPLE) + inner
            elif type(value) in _SCALARS or value is None:
                # A request or reply that is one scalar: nothing nests, so no hooks and
                # no depth to track (0.24 -> 0.12 us).
                try:
                    data = _SCALAR_PACKER.pack(value)
                except BaseException:
                    _SCALAR_PACKER.reset()
                    raise
            else:
                data = self._pack(value)
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"cannot encode {type(value).__name__}: {exc}") from None
        finally:
            self._pack_depth = 0
        if len(data) > self._limits.max_size:
            raise EncodeError(
                f"encoded value is {len(data)} bytes, over the limit of {self._limits.max_size}"
            )
        return data

    def _default(self, obj: object) -> Any:
        cls = type(obj)
        if cls is tuple:
            return msgpack.ExtType(EXT_TUPLE, self._pack(list(cast(tuple[Any, ...], obj))))
        if cls is Pid:
            pid = cast(Pid, obj)
            ext = self._pid_ext.get(pid)
            if ext is None:
                ext = msgpack.ExtType(EXT_PID, self._pack([pid.node, pid.id, pid.creation]))
                if len(self._pid_ext) >= _CACHE_SIZE:
                    self._pid_ext.clear()
                self._pid_ext[pid] = ext
            return ext
        if cls is Ref:
            ref = cast(Ref, obj)
            return msgpack.ExtType(EXT_REF, self._pack([ref.node, ref.id, ref.creation]))
        if cls is Down:
            down = cast(Down, obj)
            return msgpack.ExtType(EXT_DOWN, self._pack([down.ref, down.pid, down.reason]))
        if cls is Exit:
            exit_ = cast(Exit, obj)
            return msgpack.ExtType(EXT_EXIT, self._pack([exit_.pid, exit_.reason]))
        if cls is NameConflict:
            note = cast(NameConflict, obj)
            return msgpack.ExtType(EXT_NAME_CONFLICT, self._pack([note.name, note.winner]))
        # strict_types sends subclasses (IntEnum, str enums, ...) here: pack their base value.
        for base in _BASES:
            if isinstance(obj, base):
                return base(obj)
        raise EncodeError(f"cannot encode a value of type {cls.__module__}.{cls.__qualname__}")

    def _pack(self, value: object) -> bytes:
        depth = self._pack_depth
        if depth > self._limits.max_depth:
            raise EncodeError(f"terms nested deeper than {self._limits.max_depth}")
        packers = self._packers
        while depth >= len(packers):
            packers.append(msgpack.Packer(default=self._default, strict_types=True))
        self._pack_depth = depth + 1
        try:
            return packers[depth].pack(value)  # type: ignore[no-any-return]
        except BaseException:
            packers[depth].reset()
            raise
        finally:
            self._pack_depth = depth

    # -- decoding -----------------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """Unpack one complete term from `data`; raise `DecodeError` on any bad input."""
        if len(data) > self._limits.max_size:
            raise DecodeError(f"{len(data)} bytes is over the limit of {self._limits.max_size}")
        try:
            size = len(data)
            if size <= 3 and size:
                # A small int, None or a bool (the usual reply) without the msgpack call.
                head = data[0]
                if size == 1:
                    if head < 0x80:
                        return head
                    if head >= 0xE0:
                        return head - 0x100
                    if head in _ONE_BYTE_TERMS:
                        return _ONE_BYTE_TERMS[head]
                elif head == 0xCC and size == 2:
                    return data[1]
                elif head == 0xCD and size == 3:
                    return data[1] << 8 | data[2]
            # The usual message, a tuple of 1 to 255 bytes (ext 8), is seen here; any other
            # size of tuple in `_tuple_start` (only an ext term may be one).
            if size > 3 and data[0] == 0xC7 and data[2] == EXT_TUPLE and data[1] + 3 == size:
                start = 3
            elif size and (0xC7 <= data[0] <= 0xC9 or 0xD4 <= data[0] <= 0xD8):
                start = _tuple_start(data)
            else:
                start = 0
            if start:
                # A tuple (most messages): its items decoded in one call, not through
                # `ext_hook` and a second one; limits and depth count as on the long way.
                self._ext_depth = 1
                items = self._unpack(memoryview(data)[start:])
                if type(items) is not list:
                    raise DecodeError(f"ext type {EXT_TUPLE} does not carry an array")
                return tuple(items)
            return self._unpack(data)
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises a dozen unrelated types; see module doc
            raise DecodeError(f"malformed term: {type(exc).__name__}: {exc}") from None
        finally:
            self._ext_depth = 0

    def _unpack(self, data: bytes | bytearray | memoryview) -> Any:
        lim = self._limits
        return msgpack.unpackb(
            data,
            ext_hook=self._ext_hook,
            strict_map_key=False,
            raw=False,
            max_str_len=lim.max_str_len,
            max_bin_len=lim.max_size,
            max_array_len=lim.max_container_len,
            max_map_len=lim.max_container_len,
            max_ext_len=lim.max_size,
        )

    def _ext_hook(self, code: int, payload: bytes) -> object:
        if code == EXT_PID:
            pid = self._pid_of.get(payload)
            if pid is not None:
                return pid
        self._ext_depth += 1
        try:
            if self._ext_depth > self._limits.max_depth:
                raise DecodeError(f"terms nested deeper than {self._limits.max_depth}")
            items = self._unpack(payload)
            if type(items) is not list:
                raise DecodeError(f"ext type {code} does not carry an array")
            if code == EXT_TUPLE:
                return tuple(items)
            if code in (EXT_PID, EXT_REF):
                node, num, creation = items
                if type(node) is not str or type(num) is not int or type(creation) is not int:
                    raise DecodeError(f"malformed identifier in ext type {code}")
                if code == EXT_REF:
                    return _new_tuple(Ref, (node, num, creation))
                pid = new_pid(node, num, creation)
                if len(self._pid_of) >= _CACHE_SIZE:
                    self._pid_of.clear()
                self._pid_of[bytes(payload)] = pid
                return pid
            if code == EXT_DOWN:
                ref, pid, reason = items
                _expect(ref, Ref)
                _expect(pid, Pid)
                return Down(ref, pid, reason)
            if code == EXT_EXIT:
                pid, reason = items
                _expect(pid, Pid)
                return Exit(pid, reason)
            if code == EXT_NAME_CONFLICT:
                name, winner = items
                _expect(winner, Pid)
                return NameConflict(name, winner)
            raise DecodeError(f"unknown ext type {code}")
        finally:
            self._ext_depth -= 1


_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _ext_head(size: int, code: int) -> bytes:
    """The msgpack header of an ext term of `size` bytes (as msgpack itself writes it)."""
    fix = _FIXEXT.get(size)
    if fix is not None:
        return bytes((fix, code))
    if size < 0x100:
        return bytes((0xC7, size, code))
    if size < 0x10000:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    return b"\xc9" + size.to_bytes(4, "big") + bytes((code,))


#: The one-byte msgpack terms other than fixints: nil, false, true.
_ONE_BYTE_TERMS: dict[int, object] = {0xC0: None, 0xC2: False, 0xC3: True}


def _tuple_start(data: bytes | bytearray | memoryview) -> int:
    """Where the payload of a tuple starts if `data` is exactly one tuple term, else 0."""
    if len(data) < 2:
        return 0
    head = data[0]
    if 0xD4 <= head <= 0xD8:
        size, code, start = 1 << (head - 0xD4), data[1], 2
    elif head == 0xC7:
        if len(data) < 3:
            return 0
        size, code, start = data[1], data[2], 3
    elif head == 0xC8:
        if len(data) < 4:
            return 0
        size, code, start = int.from_bytes(data[1:3], "big"), data[3], 4
    elif head == 0xC9:
        if len(data) < 6:
            return 0
        size, code, start = int.from_bytes(data[1:5], "big"), data[5], 6
    else:
        return 0
    return start if code == EXT_TUPLE and start + size == len(data) else 0


def _expect(value: object, cls: type) -> None:
    if type(value) is not cls:
        raise DecodeError(f"expected {cls.__name__}, got {type(value).__name__}")


_default_codec = Codec()


def encode(value: object) -> bytes:
    """Pack `value` with the default limits (see `Codec.encode`)."""
    return _default_codec.encode(value)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Unpack `data` with the default limits (see `Codec.decode`)."""
    return _default_codec.decode(data)
