"""The map's wire form: every reachable state and delta round-trips through the codec,
and any malformed input is refused with DataError, never another exception."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.core.test_crdt_map import ops, run
from zmesh.core.codec import Codec
from zmesh.core.crdt_wire import decode_state, encode_state
from zmesh.errors import DataError

codec = Codec()


@given(ops)
def test_every_state_and_delta_round_trips(history: Any) -> None:
    replicas, deltas = run(history)
    for state in [*replicas.values(), *deltas]:
        back = decode_state(codec.decode(codec.encode(encode_state(state))))
        assert back == state
        assert back.scope == state.scope
        assert back.to_dict() == state.to_dict()


junk = st.recursive(
    st.none() | st.integers(-3, 3) | st.text(max_size=3) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=25,
)


@given(junk)
def test_junk_is_refused_with_data_error(wire: Any) -> None:
    with contextlib.suppress(DataError):
        decode_state(wire)


@given(ops, st.data())
def test_a_mutated_state_decodes_or_is_refused(history: Any, data: st.DataObject) -> None:
    replicas, _ = run(history)
    wire = encode_state(replicas["a"])
    spot = data.draw(st.integers(0, 4))
    wire[spot] = data.draw(junk)
    with contextlib.suppress(DataError):
        decode_state(wire)
