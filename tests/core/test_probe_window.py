"""The probe window: a bounded number of dials at once, every candidate reached in turn."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.probe_window import probe_batch

addresses = st.lists(
    st.integers(0, 5000).map(lambda i: f"tcp://10.0.{i // 256}.{i % 256}:7000"),
    unique=True,
    max_size=300,
)


@given(addresses, st.data(), st.integers(0, 400), st.integers(1, 64))
def test_a_batch_is_bounded_by_the_room_left_and_skips_busy_candidates(
    candidates: list[str], data: st.DataObject, start: int, limit: int
) -> None:
    busy = set(data.draw(st.lists(st.sampled_from(candidates)))) if candidates else set()
    in_flight = data.draw(st.integers(0, len(busy)))
    batch, cursor = probe_batch(candidates, busy, in_flight, start, limit)
    assert len(batch) <= max(limit - in_flight, 0)
    assert len(set(batch)) == len(batch)
    assert not set(batch) & busy
    assert set(batch) <= set(candidates)
    idle = len(candidates) - len(busy)
    assert len(batch) == min(idle, max(limit - in_flight, 0))
    assert 0 <= cursor < max(len(candidates), 1)


@given(addresses, st.integers(0, 400), st.integers(1, 64))
def test_with_nothing_busy_every_candidate_is_dialled_within_n_over_limit_polls(
    candidates: list[str], start: int, limit: int
) -> None:
    seen: set[str] = set()
    cursor = start
    for _ in range(math.ceil(len(candidates) / limit)):
        batch, cursor = probe_batch(candidates, set(), 0, cursor, limit)
        seen |= set(batch)
    assert seen == set(candidates)


def test_no_room_dials_nothing_and_keeps_the_cursor() -> None:
    assert probe_batch(["a", "b", "c"], {"a"}, 4, 2, limit=4) == ([], 2)
    assert probe_batch([], set(), 0, 7) == ([], 0)
