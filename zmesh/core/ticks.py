"""A shared grid for periodic work: every periodic timer of a node sleeps until the
next multiple of its period on the loop's clock, so timers with the same period (or
periods that divide one another) wake the process once together instead of each at
its own phase. On Linux the monotonic clock is shared by every process on a host, so
co-located nodes wake together too. An idle node's cost is mostly its wake-ups: the
kernel charges a process woken by a timer for the tick it woke on."""

from __future__ import annotations

import math


def until_next(now: float, period: float) -> float:
    """Seconds from `now` to the next multiple of `period` (in (0, period]; a `now` on
    the grid, to float precision, waits a whole period rather than waking at once)."""
    if period <= 0:
        raise ValueError(f"period must be positive, got {period!r}")
    step = math.floor(now / period) + 1
    delay = step * period - now
    if delay < period * 1e-6:
        delay = (step + 1) * period - now
    return delay
