"""When to busy-poll for an answer after a lone frame left, without I/O.

A frame sent on its own (a call, its reply, a message on an idle link) is usually
answered within a round trip. Polling the socket for that long instead of sleeping in
the selector saves the wake-up on each hop, as Erlang's schedulers spin briefly before
they sleep. A spin that catches nothing cost CPU for nothing, and on a loaded machine a
spinning thread takes the CPU the peer and ZeroMQ's I/O threads need: so each miss in a
row doubles how many lone frames leave before the next spin, and a catch resets it.

Calls are told apart (`Awaits`): the frame that carries a call is followed by a spin with
a backoff of its own, under which a call whose frame left without a spin and whose reply
came within a spin's time counts as a catch (a spin would have paid); the frame that
carries a reply is followed by none. Measured on 2 cores, a call loop between two nodes
(150 us a round trip with one side spinning): with both sides spinning after every lone
frame, the two spinning threads starved ZeroMQ's I/O threads (440 us), and when a burst of
load made both back off, each hop waited for a wake-up (300 us) and the one spin in 256
frames missed for that very reason, for seconds at a time (remote call median 1.2x to
1.8x raw pyzmq from run to run).
"""

from __future__ import annotations

from typing import Literal

#: Misses in a row past which the gap between spins stops growing: 2**8 - 1 = 255 lone
#: frames without a spin, so a silent link costs at most one spin in 256 frames.
MAX_MISSES = 8


#: What a lone frame is owed back, which decides the spin after it: "reply" (a call:
#: spins, with the calls' backoff), "nothing" (a reply: no spin) or "maybe" (a message:
#: spins, with the messages' backoff).
Awaits = Literal["reply", "nothing", "maybe"]


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

    def answered(self, delay: float, window: float) -> None:
        """A frame came `delay` s after a lone frame that did not spin: if a spin of
        `window` s would have caught it, spinning resumes as after a catch."""
        if delay <= window:
            self.caught()

    def missed(self) -> None:
        """A spin ran its time out and caught nothing."""
        self.misses = min(self.misses + 1, self.max_misses)
        self.skip = (1 << self.misses) - 1
