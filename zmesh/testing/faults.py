"""Faults between nodes of one process: the transport asks, per outbound frame, what to do."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class LinkFaults:
    """One node's outbound faults, by peer address: blocked, lossy or slow links.

    Installed as `ZmqTransport.faults`; a partition blocks both nodes' outbound links
    to each other, so nothing crosses in either direction, heartbeats included.
    """

    seed: int = 0
    blocked: set[str] = field(default_factory=set)
    drop_rate: dict[str, float] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def action(self, address: str) -> str | float | None:
        if address in self.blocked:
            return "drop"
        rate = self.drop_rate.get(address)
        if rate is not None and self._random.random() < rate:
            return "drop"
        return self.delay.get(address)

    def clear(self) -> None:
        self.blocked.clear()
        self.drop_rate.clear()
        self.delay.clear()
