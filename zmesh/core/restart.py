"""The supervisor's restart-intensity rule (OTP's `add_restart`), pure: time is an argument.

A supervisor may restart at most `max_restarts` children within any `max_seconds`
window; one restart more and it gives up (exits, escalating to its parent).
"""

from __future__ import annotations

from dataclasses import dataclass

from zmesh.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Intensity:
    """`max_restarts` in `max_seconds` (OTP's defaults: 3 in 5 s)."""

    max_restarts: int = 3
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ConfigError(f"max_restarts must be an int >= 0, got {self.max_restarts!r}")
        if not isinstance(self.max_seconds, int | float) or self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be a number > 0, got {self.max_seconds!r}")


def add_restart(
    restarts: tuple[float, ...], now: float, intensity: Intensity
) -> tuple[tuple[float, ...], bool]:
    """Record a restart at `now`; return the restarts still inside the window and whether
    this one is allowed (False: the intensity is exceeded and the supervisor must exit).

    `restarts` are earlier restart times, oldest first; times are monotonic seconds.
    """
    window_start = now - intensity.max_seconds
    kept = (*tuple(t for t in restarts if t > window_start), now)
    return kept, len(kept) <= intensity.max_restarts
