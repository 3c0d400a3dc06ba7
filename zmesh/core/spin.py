"""When to busy-poll for an answer after a lone frame left, without I/O.

A frame sent on its own (a call, its reply, a message on an idle link) is usually
answered within a round trip. Polling the socket for that long instead of sleeping in
the selector saves the wake-up on each hop, as Erlang's schedulers spin briefly before
they sleep. A spin that catches nothing cost CPU for nothing, and on a loaded machine a
spinning thread takes the CPU the peer and ZeroMQ's I/O threads need: so each miss in a
row doubles how many lone frames leave before the next spin, and a catch resets it.
"""

from __future__ import annotations

#: Misses in a row past which the gap between spins stops growing: 2**8 - 1 = 255 lone
#: frames without a spin, so a silent link costs at most one spin in 256 frames.
MAX_MISSES = 8


class SpinBackoff:
    """Whether the next lone frame spins: always, until spins miss; after n misses in a
    row (n capped at `max_misses`) the next 2**n - 1 lone frames do not."""

    __slots__ = ("max_misses", "misses", "skip")

    def __init__(self, max_misses: int = MAX_MISSES) -> None:
        if max_misses < 0:
            raise ValueError(f"max_misses must be >= 0, got {max_misses}")
        self.max_misses = max_misses
        self.misses = 0  # spins in a row that caught nothing
        self.skip = 0  # lone frames still to send without a spin

    def should_spin(self) -> bool:
        """A lone frame left: True if it should be followed by a spin."""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def caught(self) -> None:
        """A frame came while spinning (or the spin was cut short by one)."""
        self.misses = 0
        self.skip = 0

    def missed(self) -> None:
        """A spin ran its time out and caught nothing."""
        self.misses = min(self.misses + 1, self.max_misses)
        self.skip = (1 << self.misses) - 1
