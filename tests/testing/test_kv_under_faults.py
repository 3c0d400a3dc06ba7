"""A RuleBasedStateMachine over a real 4-node Cluster running the partitioned store at
n=3, w=r=2: puts from any node, kills (at most n - w = 1 replica lost at a time),
restarts (the node comes back empty and is repaired by reads and hints), graceful
leaves and re-joins (ownership handoff), and partitions of one node (puts on either
side, acknowledged or not). Outside a partition every read returns the last
acknowledged value of its key (or siblings including it), or a value written after it
whose put was refused: nothing acknowledged is lost.

Bounded for CI: 4 examples of at most 12 steps over real sockets, no shrinking; about
10-20 s (breadth comes from the simulated run below).
The same machine also runs in deterministic simulation (the `Simulated` subclass at the
end): the same nodes in virtual time, 100 examples of up to 30 steps in about 10 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmesh import Unavailable
from zmesh.runtime.kv import KV, Conflict
from zmesh.testing import Cluster, Simulation, VirtualTimeLoop, wait_until

NODES = ["n1", "n2", "n3", "n4"]
KEYS = [f"k{i}" for i in range(8)]


class KVUnderFaults(RuleBasedStateMachine):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        """The loop and the cluster: real sockets here, a simulation in the subclass."""
        return asyncio.new_event_loop(), Cluster(4)

    def __init__(self) -> None:
        super().__init__()
        self.loop, self.cluster = self.make()
        self.run(self.cluster.__aenter__())
        self.dead: str | None = None
        self.stores: dict[str, KV] = {n: self.run(self.cluster[n].kv_open("s")) for n in NODES}
        self.run(wait_until(self.meshed, 10))
        self.acked: dict[str, int] = {}  # key -> last acknowledged value
        self.tried: dict[str, set[int]] = {}  # key -> values attempted since, not acked
        self.partitioned = False
        self.serial = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def live(self) -> list[str]:
        return [n for n in NODES if n != self.dead]

    def meshed(self) -> bool:
        live = self.live()
        return all(self.stores[n].members() == NODES for n in live)

    @rule(home=st.sampled_from(NODES), key=st.sampled_from(KEYS))
    def put(self, home: str, key: str) -> None:
        if home == self.dead:
            return
        self.serial += 1
        try:
            self.run(self.stores[home].put(key, self.serial, w=2))
        except Unavailable:  # not acknowledged; it may still land on some replicas
            assert self.partitioned
            self.tried.setdefault(key, set()).add(self.serial)
            return
        self.acked[key] = self.serial
        self.tried[key] = set()

    @precondition(lambda self: not self.partitioned)
    @rule(home=st.sampled_from(NODES), key=st.sampled_from(KEYS))
    def get(self, home: str, key: str) -> None:
        if home == self.dead:
            return
        self.check(home, key)

    def check(self, home: str, key: str) -> None:
        """The read holds the last acknowledged value, or a value written after it
        whose put was not acknowledged (it may supersede the acknowledged one)."""
        got = self.run(self.stores[home].get(key, r=2))
        values = got.values if isinstance(got, Conflict) else [got]
        allowed = {self.acked.get(key), *self.tried.get(key, ())}
        assert allowed & set(values), (home, key, got, self.acked.get(key))
        if not isinstance(got, Conflict) and not self.tried.get(key):
            assert got == self.acked.get(key), (home, key, got)

    @precondition(lambda self: self.dead is None and not self.partitioned)
    @rule(alone=st.sampled_from(NODES))
    def partition(self, alone: str) -> None:
        self.run(self.cluster.partition([alone]))
        self.partitioned = True
        self.run(self.cluster.settle(timeout=15))

    @precondition(lambda self: self.partitioned)
    @rule()
    def heal(self) -> None:
        self.run(self.cluster.heal())
        self.partitioned = False
        self.run(self.cluster.settle(timeout=15))
        self.run(wait_until(self.meshed, 10, what="members again after the heal"))

    @precondition(lambda self: self.dead is None and not self.partitioned)
    @rule(victim=st.sampled_from(NODES))
    def kill(self, victim: str) -> None:
        self.run(self.cluster.kill(victim))
        self.dead = victim
        self.run(self.cluster.settle(timeout=15))

    @precondition(lambda self: self.dead is not None)
    @rule()
    def restart(self) -> None:
        assert self.dead is not None
        name, self.dead = self.dead, None
        node = self.run(self.cluster.restart(name))
        self.run(self.cluster.settle(timeout=15))
        self.stores[name] = self.run(node.kv_open("s"))
        self.run(wait_until(self.meshed, 10, what="the restarted node is a member again"))
        for key in self.acked:  # reads repair the empty replica: none is lost any more
            self.check(name, key)

    @precondition(lambda self: self.dead is None and not self.partitioned)
    @rule(who=st.sampled_from(NODES))
    def leave_and_rejoin(self, who: str) -> None:
        self.run(self.stores[who].close())
        others = [n for n in NODES if n != who]
        self.run(wait_until(lambda: all(who not in self.stores[n].members() for n in others), 10))
        for key in self.acked:
            self.check(others[0], key)
        self.stores[who] = self.run(self.cluster[who].kv_open("s"))
        self.run(wait_until(self.meshed, 10, what="re-joined"))

    @invariant()
    def every_acknowledged_write_is_read_back(self) -> None:
        if self.partitioned:
            return
        home = self.live()[0]
        for key in self.acked:
            self.check(home, key)

    def teardown(self) -> None:
        try:
            self.run(self.cluster.__aexit__(None, None, None))
        finally:
            self.loop.close()


KVUnderFaults.TestCase.settings = settings(
    max_examples=4,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking: on a live cluster it runs for minutes; the failing run is printed.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
test_kv_under_faults = pytest.mark.timeout(240)(KVUnderFaults.TestCase)


class SimulatedKVUnderFaults(KVUnderFaults):
    """The same rules and invariants on the same code in deterministic simulation: many
    more examples and steps fit in the time, and a failing example replays exactly."""

    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        return VirtualTimeLoop(), Simulation(4)


SimulatedKVUnderFaults.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_kv_under_faults_in_simulation = pytest.mark.timeout(240)(SimulatedKVUnderFaults.TestCase)
