"""The fault rules the cluster state machines share: cut one node off, heal, kill up to
two nodes and restart them, each followed by the machine's own `settle`.

A machine mixing these in provides `cluster`, `run(coro)`, `settle()`, the set `dead`
and the flag `partitioned`; `restarted(name, node)` is its hook for what a restarted
node must open again.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

NODES = ["n1", "n2", "n3"]


class FaultRules:
    """Partition, heal, kill and restart over the nodes `NODES` of `self.cluster`."""

    cluster: Any
    dead: set[str]
    partitioned: bool

    def run(self, coro: Any) -> Any: ...
    def settle(self) -> None: ...

    def restarted(self, name: str, node: Any) -> None:
        """Called with each restarted node before the machine settles."""

    @rule(alone=st.sampled_from(NODES))
    def partition(self, alone: str) -> None:
        self.run(self.cluster.partition([alone]))
        self.partitioned = True
        self.settle()

    @precondition(lambda self: self.partitioned)
    @rule()
    def heal(self) -> None:
        self.run(self.cluster.heal())
        self.partitioned = False
        self.settle()

    @precondition(lambda self: len(self.dead) < 2)
    @rule(victim=st.sampled_from(NODES))
    def kill(self, victim: str) -> None:
        if victim not in self.dead:
            self.run(self.cluster.kill(victim))
            self.dead.add(victim)
            self.settle()

    @precondition(lambda self: bool(self.dead))
    @rule()
    def restart(self) -> None:
        name = sorted(self.dead)[0]
        node = self.run(self.cluster.restart(name))
        self.restarted(name, node)
        self.dead.discard(name)
        self.settle()
