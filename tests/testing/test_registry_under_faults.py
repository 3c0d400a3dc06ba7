"""A RuleBasedStateMachine over a real 3-node Cluster: registrations, unregistrations,
process exits, partitions, heals, kills and restarts; after every settle the registry
invariants hold: every node agrees, every name maps to a live process, one owner each.

Bounded for CI: 3 examples of at most 8 steps, each step settling within seconds
(`settings` below); about 20-40 s. The same machine runs in deterministic simulation
(`SimulatedRegistryUnderFaults`): the same nodes in virtual time, so 40 examples of
up to 20 steps take seconds, and a failure replays exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import zmesh_test_app as app
from fault_rules import NODES, FaultRules
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from zmesh.core.registry_state import leader_for
from zmesh.testing import TEST_CONFIG, Cluster, Simulation, VirtualTimeLoop, wait_until

NAMES = ["alpha", "beta", "gamma"]


class RegistryUnderFaults(FaultRules, RuleBasedStateMachine):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        """The loop and the cluster: real sockets here, a simulation in the subclass."""
        return asyncio.new_event_loop(), Cluster(3)

    def __init__(self) -> None:
        super().__init__()
        self.loop, self.cluster = self.make()
        self.run(self.cluster.__aenter__())
        self.dead: set[str] = set()
        self.partitioned = False

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def live(self) -> list[str]:
        return [n for n in NODES if n not in self.dead]

    @rule(home=st.sampled_from(NODES), name=st.sampled_from(NAMES))
    def register(self, home: str, name: str) -> None:
        if home in self.dead:
            return
        node = self.cluster[home]
        pid = node.spawn(app.idle)
        self.run(node.register(name, pid))

    @rule(home=st.sampled_from(NODES), name=st.sampled_from(NAMES))
    def unregister(self, home: str, name: str) -> None:
        if home not in self.dead:
            self.run(self.cluster[home].unregister(name))

    @rule(name=st.sampled_from(NAMES))
    def owner_exits(self, name: str) -> None:
        for home in self.live():
            pid = self.cluster[home].whereis(name)
            if pid is not None and pid.node == home:
                self.cluster[home].exit(pid, "kill")
                return

    def settle(self) -> None:
        self.run(self.cluster.settle(timeout=15))
        self.run(asyncio.sleep(0.15))  # registry tables ride right behind the node-up

    @invariant()
    def registry_invariants_hold_within_each_connected_group(self) -> None:
        self.run(asyncio.sleep(0.05))
        for name in NAMES:
            for home in self.live():
                pid = self.cluster[home].whereis(name)
                if pid is None:
                    continue
                # one owner, alive on its node
                assert pid.node in self.live(), (name, home, pid)
                assert self.cluster[pid.node].is_alive(pid), (name, home, pid)
                for other in self.live():
                    if self.cluster.reachable(home, other) and pid.node == home:
                        assert self.cluster[other].whereis(name) == pid, (name, home, other)

    def teardown(self) -> None:
        try:
            self.run(self.cluster.heal())
            for name in sorted(self.dead):
                self.run(self.cluster.restart(name))
            self.run(self.cluster.settle(timeout=15))
            self.run(asyncio.sleep(0.3))
            views = [{n: self.cluster[h].whereis(n) for n in NAMES} for h in NODES]
            assert all(v == views[0] for v in views), views
            for pid in views[0].values():
                assert pid is None or self.cluster[pid.node].is_alive(pid)
        finally:
            self.run(self.cluster.__aexit__(None, None, None))
            self.loop.close()


RegistryUnderFaults.TestCase.settings = settings(
    max_examples=3,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_registry_under_faults = pytest.mark.timeout(240)(RegistryUnderFaults.TestCase)


class SimulatedRegistryUnderFaults(RegistryUnderFaults):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        return VirtualTimeLoop(), Simulation(3)


SimulatedRegistryUnderFaults.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_registry_under_faults_in_simulation = pytest.mark.timeout(240)(
    SimulatedRegistryUnderFaults.TestCase
)


# n1's frames to n2 are held back 1 s: down_after must outlast that, and the steps
# before n2 registers must fit in it even on a loaded machine.
@pytest.mark.zmesh_nodes(3, config=dataclasses.replace(TEST_CONFIG, down_after=3.0))
async def test_a_late_add_of_a_removed_name_does_not_defeat_the_next_owner(
    zmesh_cluster: Cluster,
) -> None:
    """n1 registers and unregisters a name whose leader is n3, while n1's frames to n2
    are held back: n2 hears nothing of it, asks n3, and gets the name. When n1's add
    reaches n2 at last it must not come back as an earlier owner that defeats n2's."""
    c = zmesh_cluster
    assert c["n2"].config.down_after == 3.0
    name = next(f"late{i}" for i in range(1000) if leader_for(f"late{i}", NODES) == "n3")
    first, second = c["n1"].spawn(app.idle), c["n2"].spawn(app.idle)
    await c.delay("n1", "n2", 1.0)
    assert await c["n1"].register(name, first)
    await wait_until(lambda: c["n3"].whereis(name) == first, 1)  # the add reached the leader
    await c["n1"].unregister(name)
    await wait_until(lambda: c["n3"].whereis(name) is None, 1)
    assert c["n2"].whereis(name) is None
    assert await c["n2"].register(name, second)
    async with c["n1"].process() as me:  # per-pair FIFO: n1's held frames are in at n2
        c["n1"].send(c["n2"].spawn(app.echo), (me.pid, "flushed"))
        assert await me.receive(timeout=5) == ("echo", "flushed")
    assert c["n2"].is_alive(second)
    assert [n.whereis(name) for n in c] == [second] * 3
