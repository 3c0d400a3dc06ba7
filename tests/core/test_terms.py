"""Pids and refs made on the runtime's fast paths are the same values as the public
constructors make: equal, same hash, same text, immutable, through the codec unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.codec import Codec
from zmesh.runtime.gen_server import new_ref
from zmesh.terms import Pid, Ref, new_pid

names = st.text(min_size=1, max_size=20)
numbers = st.integers(min_value=0, max_value=2**63 - 1)


@given(names, numbers, numbers)
def test_a_fast_pid_is_the_pid(node: str, pid_id: int, creation: int) -> None:
    fast, made = new_pid(node, pid_id, creation), Pid(node, pid_id, creation)
    assert type(fast) is Pid and fast == made and hash(fast) == hash(made)
    assert (str(fast), repr(fast), fast.order()) == (str(made), repr(made), made.order())
    with pytest.raises(AttributeError):
        fast.id = 0  # type: ignore[misc]


@given(names, numbers, numbers)
def test_a_fast_ref_is_the_ref(node: str, ref_id: int, creation: int) -> None:
    fast, made = new_ref(node, ref_id, creation), Ref(node, ref_id, creation)
    assert type(fast) is Ref and fast == made and hash(fast) == hash(made)
    assert (str(fast), repr(fast)) == (str(made), repr(made))
    same_fields: object = Pid(node, ref_id, creation)  # a tuple, but never equal to a pid
    assert fast != same_fields and same_fields != fast
    with pytest.raises(AttributeError):
        fast.id = 0  # type: ignore[misc]


@given(names, numbers, numbers)
def test_both_survive_the_codec(node: str, num: int, creation: int) -> None:
    codec = Codec()
    term = (new_pid(node, num, creation), new_ref(node, num, creation))
    back = codec.decode(codec.encode(term))
    assert back == term and type(back[0]) is Pid and type(back[1]) is Ref
