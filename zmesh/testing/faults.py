"""One node's outbound network faults, asked by its transport once per frame.

The transport (`zmesh.runtime.transport.ZmqTransport.faults`) knows nothing of this
module: it only calls `action(address)`. `Cluster` installs one `LinkFaults` on every
node and keeps them in step, so a fault between two nodes is set on both of them and
blocks both directions.
"""

from __future__ import annotations

import random
from typing import Literal

#: What happens to one frame: "drop" it, hold it back this many seconds, or None (send).
Action = Literal["drop"] | float | None


class LinkFaults:
    """Faults on the frames one node sends, keyed by the peer's listen address.

    - `blocked`: every frame to these addresses is dropped (a partition).
    - `drop_rate[address]`: each frame is dropped with this probability, drawn from a
      `random.Random(seed)` of its own, so a run is repeatable for a given traffic.
    - `delay[address]`: each frame is held back this many seconds. The transport keeps
      a link's order, so the frames behind a held one wait too.

    A blocked address wins over a drop rate, a drop over a delay. Frames are the unit:
    a frame may carry several envelopes (a message, a heartbeat, a link signal).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.blocked: set[str] = set()
        self.drop_rate: dict[str, float] = {}
        self.delay: dict[str, float] = {}
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        return (
            f"LinkFaults(blocked={sorted(self.blocked)}, drop_rate={self.drop_rate}, "
            f"delay={self.delay})"
        )

    def action(self, address: str) -> Action:
        """The fate of the next frame for the peer at `address`."""
        if address in self.blocked:
            return "drop"
        rate = self.drop_rate.get(address)
        if rate is not None and self._random.random() < rate:
            return "drop"
        return self.delay.get(address)

    def clear(self) -> None:
        """Lift every fault: frames pass again (frames already held still wait their turn)."""
        self.blocked.clear()
        self.drop_rate.clear()
        self.delay.clear()

    @property
    def active(self) -> bool:
        """Whether any fault is set."""
        return bool(self.blocked or self.drop_rate or self.delay)
