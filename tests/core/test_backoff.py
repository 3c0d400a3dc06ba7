"""Capped, jittered backoff: bounded, growing, never past the cap, jitter within range."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.backoff import Backoff
from zmesh.errors import ConfigError

rands = st.floats(0, 1, exclude_max=True)


def test_without_jitter_the_delay_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.25, cap=2.0, jitter=0.0)
    assert [b.delay(n, 0.9) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


@given(st.integers(0, 10_000), rands, st.floats(0, 1))
def test_delay_stays_within_jitter_band_under_the_cap(attempt: int, rand: float, j: float) -> None:
    b = Backoff(base=0.1, cap=1.5, jitter=j)
    raw = min(1.5, 0.1 * 2.0 ** min(attempt, 64))
    assert raw * (1 - j) - 1e-12 <= b.delay(attempt, rand) <= raw <= 1.5


@given(st.integers(0, 100), rands)
def test_for_one_draw_the_delay_never_shrinks_with_attempts(attempt: int, rand: float) -> None:
    b = Backoff()
    assert b.delay(attempt, rand) <= b.delay(attempt + 1, rand)


@pytest.mark.parametrize(
    "kwargs", [{"base": 0}, {"base": 3, "cap": 2}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kwargs)


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ConfigError):
        Backoff().delay(-1, 0.0)
