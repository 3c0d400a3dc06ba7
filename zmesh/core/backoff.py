"""Capped, jittered exponential backoff: how long to wait before retry number n.

Pure: the caller passes the random draw, so tests pin it and the runtime passes
`random.random()`. Jitter spreads the retries of many nodes that lost the same peer
at the same moment, so a restarted node is not dialled by all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from zmesh.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Backoff:
    """`delay(n)` is `base * 2**n` capped at `cap`, scaled into `[1 - jitter, 1]`."""

    base: float = 0.25
    cap: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ConfigError(
                f"backoff needs 0 < base <= cap, got base={self.base!r} cap={self.cap!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff jitter must be within [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds before retry `attempt` (0 is the first), given `rand` in [0, 1)."""
        if attempt < 0:
            raise ConfigError(f"backoff attempt must be >= 0, got {attempt!r}")
        # 2**64 overflows nothing but is long past the cap: clamp the exponent.
        raw = min(self.cap, self.base * 2.0 ** min(attempt, 64))
        return raw * (1.0 - self.jitter * rand)
