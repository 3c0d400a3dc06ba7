"""Properties of the busy-poll backoff (zmesh/core/spin.py): spins keep on while they
catch frames, grow exponentially rarer while they miss, and a catch brings them back."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.spin import MAX_MISSES, SpinBackoff


def spins_over(backoff: SpinBackoff, frames: int, outcomes: list[bool]) -> list[int]:
    """Send `frames` lone frames; each spin takes the next outcome (True: it caught a
    frame; False once the outcomes run out). The indexes of the frames that spun."""
    spun = []
    for index in range(frames):
        if backoff.should_spin():
            spun.append(index)
            outcome = outcomes[len(spun) - 1] if len(spun) <= len(outcomes) else False
            if outcome:
                backoff.caught()
            else:
                backoff.missed()
    return spun


@given(st.integers(1, 5000), st.integers(0, 10))
def test_spins_that_only_miss_grow_exponentially_rarer(frames: int, cap: int) -> None:
    spun = spins_over(SpinBackoff(cap), frames, [])
    gaps = [b - a - 1 for a, b in pairwise(spun)]
    assert gaps == [(1 << min(n, cap)) - 1 for n in range(1, len(spun))]
    # At most one spin per 2**cap frames once the cap is reached.
    assert len(spun) <= cap + 1 + math.ceil(frames / (1 << cap))


@given(st.lists(st.booleans(), max_size=60), st.integers(0, 10))
def test_the_gap_after_a_spin_follows_the_misses_in_a_row(outcomes: list[bool], cap: int) -> None:
    spun = spins_over(SpinBackoff(cap), 20_000, outcomes)
    in_a_row = 0
    for i, (a, b) in enumerate(pairwise(spun)):
        caught = outcomes[i] if i < len(outcomes) else False
        in_a_row = 0 if caught else min(in_a_row + 1, cap)
        assert b - a - 1 == (1 << in_a_row) - 1


@given(st.lists(st.sampled_from(["frame", "caught", "missed"]), max_size=200))
def test_the_state_stays_bounded_and_a_catch_spins_the_next_frame(events: list[str]) -> None:
    backoff = SpinBackoff()
    for event in events:
        if event == "frame":
            backoff.should_spin()
        elif event == "caught":
            backoff.caught()
        else:
            backoff.missed()
        assert 0 <= backoff.misses <= MAX_MISSES
        assert 0 <= backoff.skip <= (1 << MAX_MISSES) - 1
    backoff.caught()
    assert backoff.should_spin()


@given(
    st.lists(st.booleans(), max_size=20),
    st.floats(0, 0.01),
    st.floats(1e-6, 0.01),
)
def test_an_unspun_answer_within_the_window_counts_as_a_catch(
    outcomes: list[bool], delay: float, window: float
) -> None:
    backoff = SpinBackoff()
    for caught in outcomes:  # any history of catches and misses
        backoff.caught() if caught else backoff.missed()
    before = (backoff.misses, backoff.skip)
    backoff.answered(delay, window)
    if delay <= window:  # a spin would have caught it: the next lone frame spins
        assert (backoff.misses, backoff.skip) == (0, 0) and backoff.should_spin()
    else:  # too late for a spin to have paid: the backoff stands
        assert (backoff.misses, backoff.skip) == before


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_misses"):
        SpinBackoff(-1)
