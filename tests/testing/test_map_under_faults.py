"""A RuleBasedStateMachine over a real 3-node Cluster: puts and deletes on any node,
partitions, heals, kills and restarts; after every settle each connected group's
replicas of the map are equal, and every value seen was written by some put.

Bounded for CI: 3 examples of at most 12 steps over real sockets, no shrinking; about
5-20 s (breadth comes from the simulated run below).
The same machine also runs in deterministic simulation (the `Simulated` subclass at the
end): the same nodes in virtual time, 100 examples of up to 30 steps in about 10 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fault_rules import NODES, FaultRules
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from zmesh.runtime.replicated_map import ReplicatedMap
from zmesh.testing import Cluster, Simulation, VirtualTimeLoop, wait_until

KEYS = ["a", "b", "c", 1, ("t", 2)]


class MapUnderFaults(FaultRules, RuleBasedStateMachine):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        """The loop and the cluster: real sockets here, a simulation in the subclass."""
        return asyncio.new_event_loop(), Cluster(3)

    def __init__(self) -> None:
        super().__init__()
        self.loop, self.cluster = self.make()
        self.run(self.cluster.__aenter__())
        self.maps: dict[str, ReplicatedMap] = {}
        for name in NODES:
            self.maps[name] = self.run(self.cluster[name].replicated_map("m"))
        self.dead: set[str] = set()
        self.partitioned = False
        self.written: set[Any] = set()
        self.serial = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def live(self) -> list[str]:
        return [n for n in NODES if n not in self.dead]

    @rule(home=st.sampled_from(NODES), keys=st.lists(st.sampled_from(KEYS), max_size=4))
    def put(self, home: str, keys: list[Any]) -> None:
        if home in self.dead:
            return
        for key in keys:
            self.serial += 1
            value = (home, self.serial)
            self.written.add(value)
            self.maps[home].put(key, value)

    @rule(home=st.sampled_from(NODES), key=st.sampled_from(KEYS))
    def delete(self, home: str, key: Any) -> None:
        if home not in self.dead:
            self.maps[home].delete(key)

    def restarted(self, name: str, node: Any) -> None:
        self.maps[name] = self.run(node.replicated_map("m"))

    def settle(self) -> None:
        self.run(self.cluster.settle(timeout=15))

    def groups_equal(self) -> bool:
        for group in self.cluster.groups():
            views = [self.maps[n].to_dict() for n in group if n not in self.dead]
            if any(v != views[0] for v in views):
                return False
        return True

    @invariant()
    def connected_replicas_converge_to_written_values(self) -> None:
        self.run(wait_until(self.groups_equal, 10, what="connected replicas equal"))
        for name in self.live():
            for value in self.maps[name].to_dict().values():
                assert value in self.written, (name, value)

    def teardown(self) -> None:
        try:
            self.run(self.cluster.heal())
            for name in sorted(self.dead):
                node = self.run(self.cluster.restart(name))
                self.maps[name] = self.run(node.replicated_map("m"))
            self.dead.clear()
            self.run(self.cluster.settle(timeout=15))
            maps = [self.maps[n] for n in NODES]
            self.run(
                wait_until(
                    lambda: all(m.to_dict() == maps[0].to_dict() for m in maps),
                    10,
                    what="every replica equal after the final heal",
                )
            )
            assert all(m.memory()["gaps"] == 0 for m in maps)
        finally:
            self.run(self.cluster.__aexit__(None, None, None))
            self.loop.close()


MapUnderFaults.TestCase.settings = settings(
    max_examples=3,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking: on a live cluster it runs for minutes; the failing run is printed.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
test_map_under_faults = pytest.mark.timeout(240)(MapUnderFaults.TestCase)


class SimulatedMapUnderFaults(MapUnderFaults):
    """The same rules and invariants on the same code in deterministic simulation: many
    more examples and steps fit in the time, and a failing example replays exactly."""

    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        return VirtualTimeLoop(), Simulation(3)


SimulatedMapUnderFaults.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_map_under_faults_in_simulation = pytest.mark.timeout(240)(SimulatedMapUnderFaults.TestCase)
