"""The codec: every term round-trips; every bad input raises DecodeError, nothing else."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh import DecodeError, Down, EncodeError, Exit, NameConflict, Pid, Ref
from zmesh.core.codec import Codec, Limits, decode, encode

names = st.text(min_size=1, max_size=12)
pids = st.builds(Pid, names, st.integers(0, 2**40), st.integers(0, 2**40))
refs = st.builds(Ref, names, st.integers(0, 2**40), st.integers(0, 2**40))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | pids
    | refs
)
terms = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(-(2**63), 2**63), inner, max_size=4)
        | st.builds(Down, refs, pids, inner)
        | st.builds(Exit, pids, inner)
    ),
    max_leaves=20,
)


@given(terms)
def test_every_term_round_trips_with_its_types(term: object) -> None:
    back = decode(encode(term))
    assert back == term
    assert type(back) is type(term)


@given(st.lists(terms, max_size=5).map(tuple))
def test_a_top_level_tuple_is_encoded_as_it_is_inside_a_list(term: tuple[object, ...]) -> None:
    # The top level takes a short cut (no `default` hook); its bytes and its decoding
    # must be those of the tuple packed through the hook, as an element.
    codec = Codec()
    inside = codec.encode([term])
    assert inside[:1] == b"\x91"
    assert codec.encode(term) == inside[1:]
    back = codec.decode(inside[1:])
    assert back == term and type(back) is tuple
    assert codec.decode(memoryview(inside)[1:]) == term


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_a_truncated_or_padded_tuple_raises_decode_error(cut: int) -> None:
    blob = encode((b"pid", 1, "x" * 300))
    with pytest.raises(DecodeError):
        decode(blob[:-cut])
    with pytest.raises(DecodeError):
        decode(blob + b"\x00" * cut)


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    value = [(1, [2, (3,)]), ((),)]
    back = decode(encode(value))
    assert back == value
    assert type(back[0]) is tuple and type(back[0][1]) is list and type(back[0][1][1]) is tuple


def test_signal_records_round_trip() -> None:
    pid = Pid("n", 1, 2)
    for value in (Down(Ref("n", 1, 2), pid, "normal"), Exit(pid, ("x", 1)), NameConflict("k", pid)):
        assert decode(encode(value)) == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@given(terms, st.data())
def test_corrupted_encodings_decode_or_raise_decode_error(
    term: object, data: st.DataObject
) -> None:
    raw = bytearray(encode(term))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DecodeError):
        decode(bytes(raw[:cut]))


HOSTILE = {
    "empty": b"",
    "truncated": encode([1, 2, "abc"])[:-1],
    "trailing bytes": encode(1) + b"\x01",
    "array32 of 2**32-1 items": b"\xdd\xff\xff\xff\xff",
    "reserved byte 0xc1": b"\xc1",
    "invalid utf-8": b"\xa2\xff\xfe",
    "list as map key": b"\x81\x91\x01\x02",
    "unknown ext type": msgpack.packb(msgpack.ExtType(99, b"\x90")),
    "ext pid with wrong arity": msgpack.packb(msgpack.ExtType(1, msgpack.packb(["n", 1]))),
    "ext pid with wrong types": msgpack.packb(msgpack.ExtType(1, msgpack.packb([1, "a", 2]))),
    "ext down without a ref": msgpack.packb(msgpack.ExtType(4, msgpack.packb([1, 2, 3]))),
    "ext payload not an array": msgpack.packb(msgpack.ExtType(3, msgpack.packb(5))),
    "huge timestamp": b"\xd7\xff" + b"\xff" * 8,
    "deep nesting": b"\x91" * 5000 + b"\x01",
}


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_nested_tuple_bomb_is_refused_by_depth() -> None:
    value: object = ()
    for _ in range(60):
        value = (value,)
    blob = encode(value)
    with pytest.raises(DecodeError, match="deeper"):
        Codec(Limits(max_depth=10)).decode(blob)


def test_oversized_input_is_refused_before_decoding() -> None:
    codec = Codec(Limits(max_size=100))
    with pytest.raises(DecodeError, match="over the limit"):
        codec.decode(b"\x01" * 101)
    with pytest.raises(EncodeError, match="over the limit"):
        codec.encode("x" * 200)


def test_container_length_limit() -> None:
    codec = Codec(Limits(max_container_len=10))
    with pytest.raises(DecodeError):
        codec.decode(encode(list(range(11))))


def test_unsupported_types_raise_encode_error() -> None:
    for value in (object(), {1, 2}, lambda: 1, 2**70):
        with pytest.raises(EncodeError):
            encode(value)


def test_subclasses_of_builtins_are_sent_as_their_base_value() -> None:
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    assert decode(encode([Colour.RED])) == [1]


def test_decode_error_is_a_zmesh_error() -> None:
    from zmesh import ZmeshError

    assert issubclass(DecodeError, ZmeshError)


@given(st.binary(min_size=0, max_size=3))
def test_short_inputs_decode_exactly_as_msgpack_does(data: bytes) -> None:
    # One to three bytes take the scalar fast path: the same value and type as msgpack
    # gives, or DecodeError where msgpack refuses.
    try:
        expected = msgpack.unpackb(data, strict_map_key=False)  # as the codec reads maps
    except Exception:
        with pytest.raises(DecodeError):
            decode(data)
        return
    if isinstance(expected, int | bool | type(None)):
        value = decode(data)
        assert value == expected and type(value) is type(expected)
