"""The restart-intensity rule, as properties of the pure function."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh import ConfigError
from zmesh.core.restart import Intensity, add_restart

intensities = st.builds(
    Intensity, st.integers(0, 10), st.floats(0.01, 100, allow_nan=False, allow_infinity=False)
)
gaps = st.lists(st.floats(0, 10, allow_nan=False, allow_infinity=False), max_size=40)


def replay(intensity: Intensity, gaps: list[float]) -> list[tuple[float, bool]]:
    restarts: tuple[float, ...] = ()
    now, out = 0.0, []
    for gap in gaps:
        now += gap
        restarts, ok = add_restart(restarts, now, intensity)
        out.append((now, ok))
    return out


@given(intensities, gaps)
def test_a_restart_is_allowed_iff_the_window_holds_at_most_max_restarts(
    intensity: Intensity, gaps: list[float]
) -> None:
    times = []
    for now, ok in replay(intensity, gaps):
        times.append(now)
        in_window = [t for t in times if t > now - intensity.max_seconds]
        assert ok == (len(in_window) <= intensity.max_restarts)


@given(intensities, gaps)
def test_kept_restarts_are_inside_the_window_and_ordered(
    intensity: Intensity, gaps: list[float]
) -> None:
    restarts: tuple[float, ...] = ()
    now = 0.0
    for gap in gaps:
        now += gap
        restarts, _ = add_restart(restarts, now, intensity)
        assert restarts[-1] == now
        assert all(t > now - intensity.max_seconds for t in restarts[:-1])
        assert list(restarts) == sorted(restarts)


@given(st.floats(0.01, 100), st.integers(1, 30))
def test_zero_intensity_never_allows_a_restart(seconds: float, n: int) -> None:
    assert not any(ok for _, ok in replay(Intensity(0, seconds), [1.0] * n))


@given(intensities, st.integers(1, 30))
def test_restarts_spaced_wider_than_the_window_are_always_allowed(
    intensity: Intensity, n: int
) -> None:
    if intensity.max_restarts == 0:
        return
    spaced = [intensity.max_seconds + 0.001] * n
    assert all(ok for _, ok in replay(intensity, spaced))


def test_otp_defaults_and_misuse() -> None:
    assert Intensity() == Intensity(3, 5.0)
    with pytest.raises(ConfigError, match="max_restarts"):
        Intensity(-1, 5.0)
    with pytest.raises(ConfigError, match="max_seconds"):
        Intensity(3, 0)
