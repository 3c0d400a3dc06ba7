"""The periodic-timer grid: sleeps land on multiples of the period."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.ticks import until_next

times = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
periods = st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0])


@given(times, periods)
def test_the_wake_up_is_within_one_period_and_on_the_grid(now: float, period: float) -> None:
    delay = until_next(now, period)
    assert 0.0 < delay <= period * (1 + 1e-6)  # to float precision
    wake = now + delay
    steps = wake / period
    assert math.isclose(steps, round(steps), abs_tol=1e-6 * max(1.0, steps))


fractions = st.floats(min_value=0.0, max_value=0.98)


@given(st.integers(min_value=0, max_value=10**6), fractions, fractions, periods)
def test_timers_set_at_different_moments_of_one_period_wake_together(
    cycle: int, x: float, y: float, period: float
) -> None:
    a, b = (cycle + x) * period, (cycle + y) * period
    assert math.isclose(a + until_next(a, period), b + until_next(b, period), abs_tol=1e-6)


def test_a_period_that_divides_another_shares_its_wake_ups() -> None:
    # A 1 s timer and a 2 s timer started at odd moments meet on every even second.
    assert 7.3 + until_next(7.3, 1.0) == pytest.approx(8.0)
    assert 6.9 + until_next(6.9, 2.0) == pytest.approx(8.0)


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError):
        until_next(1.0, 0.0)
