"""A RuleBasedStateMachine over a real 3-node Cluster: spawn_service (one service with a
quorum), stop_service, calls, joins, graceful leaves, kills, pauses past down_after,
partitions (a node may restart inside one) and heals. After every settle: in each
connected group exactly one instance per spec (none of the quorum service in a
minority), on its ring owner, registered under its name on every node of the group;
every node holds the specs spawned; a counter never goes backwards across a graceful
move (a kill, a pause or a partition may lose what it held).

Bounded for CI: 3 examples of at most 10 steps (`settings` below); about 30-60 s. The
same machine ran 25 examples of 15 steps while the layer was built, and runs in
deterministic simulation (`SimulatedServicesUnderFaults`, at the end): the same nodes in
virtual time, many more examples and steps in less wall time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmesh import NoProc, NoQuorum
from zmesh.testing import Cluster, Simulation, VirtualTimeLoop

NODES = ["n1", "n2", "n3"]
SERVICES = ["alpha", "beta", "gamma", "delta"]
QUORUM = "delta"  # runs only on a side with a majority
COUNTER = "zmesh_test_app:DistributedCounter"


class ServicesUnderFaults(RuleBasedStateMachine):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        """The loop and the cluster: real sockets here, a simulation in the subclass."""
        return asyncio.new_event_loop(), Cluster(3, load=["zmesh_test_app"])

    def __init__(self) -> None:
        super().__init__()
        self.loop, self.cluster = self.make()
        self.run(self.cluster.__aenter__())
        self.down: set[str] = set()
        self.left: set[str] = set()  # down by a graceful leave: no longer a member
        self.partitioned = False
        # Restarted while it reaches no node holding the specs: it knows none until the heal.
        self.amnesiac: set[str] = set()
        self.spawned: set[str] = set()
        self.last: dict[str, int] = {}
        self.exact: dict[str, bool] = {}  # the next increment must return last + 1

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 45))

    def live(self) -> list[str]:
        return [n for n in NODES if n not in self.down]

    def settle(self) -> None:
        self.run(self.cluster.settle_services(timeout=20))

    def minority(self) -> bool:
        """The live nodes are no strict majority of the members not stopped gracefully."""
        return len(self.live()) * 2 <= len(NODES) - len(self.left)

    def lose_state_of(self, names: list[str]) -> None:
        for name in names:
            self.exact[name] = False

    # -- the application ---------------------------------------------------------------------

    @precondition(lambda self: not self.partitioned)
    @rule(name=st.sampled_from(SERVICES), home=st.sampled_from(NODES))
    def spawn(self, name: str, home: str) -> None:
        if home in self.down:
            return
        node = self.cluster[home]
        if name == QUORUM and self.minority():
            with pytest.raises(NoQuorum):
                self.run(node.spawn_service(name, COUNTER, 0, quorum=True, timeout=10))
            return
        pid = self.run(node.spawn_service(name, COUNTER, 0, quorum=name == QUORUM, timeout=10))
        if name not in self.spawned:
            self.spawned.add(name)
            self.last[name], self.exact[name] = 0, True
        assert node.whereis(name) == pid

    @precondition(lambda self: not self.partitioned)
    @rule(name=st.sampled_from(SERVICES), home=st.sampled_from(NODES))
    def stop(self, name: str, home: str) -> None:
        if home in self.down:
            return
        self.run(self.cluster[home].stop_service(name, timeout=10))
        self.spawned.discard(name)
        self.settle()

    @precondition(lambda self: not self.partitioned)
    @rule(name=st.sampled_from(SERVICES), via=st.sampled_from(NODES))
    def increment(self, name: str, via: str) -> None:
        if name not in self.spawned or via in self.down:
            return
        if name == QUORUM and self.minority():
            with pytest.raises(NoProc):  # a quorum service does not run in a minority
                self.run(self.cluster[via].call(name, "increment", timeout=10))
            return
        value = self.run(self.cluster[via].call(name, "increment", timeout=10))
        if self.exact[name]:
            assert value == self.last[name] + 1, (name, value, self.last[name])
        self.last[name], self.exact[name] = value, True

    # -- faults --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.down) < 2 and not self.partitioned)
    @rule(victim=st.sampled_from(NODES))
    def kill(self, victim: str) -> None:
        if victim in self.down:
            return
        self.lose_state_of([n for n in self.spawned if self.runs_on(n) == victim])
        self.run(self.cluster.kill(victim))
        self.down.add(victim)
        self.settle()

    @precondition(lambda self: len(self.down) < 2 and not self.partitioned)
    @rule(victim=st.sampled_from(NODES))
    def leave(self, victim: str) -> None:
        if victim in self.down:
            return
        self.run(self.cluster.leave(victim))  # hands its services off: no state lost
        self.down.add(victim)
        self.left.add(victim)
        self.settle()

    @precondition(lambda self: len(self.down) < 2 and not self.partitioned)
    @rule(victim=st.sampled_from(NODES))
    def pause_past_down_after(self, victim: str) -> None:
        if victim in self.down:
            return
        self.lose_state_of(list(self.spawned))  # the paused side keeps its own instances
        self.run(self.cluster.pause(victim))
        self.settle()
        self.run(self.cluster.resume(victim))
        self.settle()

    @precondition(lambda self: bool(self.down))
    @rule()
    def join(self) -> None:
        name = sorted(self.down)[0]
        self.run(self.cluster.restart(name))  # takes its services over with their state
        if all(n in self.amnesiac for n in self.cluster.expected_view(name)):
            self.amnesiac.add(name)  # it reaches no node that holds the specs
        self.down.discard(name)
        self.left.discard(name)
        self.settle()

    @precondition(lambda self: not self.partitioned)
    @rule(alone=st.sampled_from(NODES))
    def partition(self, alone: str) -> None:
        self.run(self.cluster.partition([alone]))
        self.partitioned = True
        self.lose_state_of(list(self.spawned))  # two instances, one will be dropped
        self.settle()

    @precondition(lambda self: self.partitioned)
    @rule()
    def heal(self) -> None:
        self.run(self.cluster.heal())
        self.partitioned = False
        self.amnesiac.clear()
        self.settle()

    def runs_on(self, name: str) -> str | None:
        pids = self.cluster.instances(name)
        return pids[0].node if pids else None

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_instance_per_spec_on_its_owner(self) -> None:
        self.settle()  # raises SettleTimeout naming the problems
        assert self.cluster.service_problems() == []
        for home in self.live():
            names = {s.name for s in self.cluster[home].services()}
            expected = set() if home in self.amnesiac else self.spawned
            assert names == expected, (home, names, expected)

    def teardown(self) -> None:
        try:
            self.run(self.cluster.heal())
            for name in sorted(self.down):
                self.run(self.cluster.restart(name))
            self.settle()
            assert self.cluster.service_problems() == []
        finally:
            self.run(self.cluster.__aexit__(None, None, None))
            self.loop.close()


ServicesUnderFaults.TestCase.settings = settings(
    max_examples=3,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_services_under_faults = pytest.mark.timeout(300)(ServicesUnderFaults.TestCase)


class SimulatedServicesUnderFaults(ServicesUnderFaults):
    def make(self) -> tuple[asyncio.AbstractEventLoop, Cluster]:
        return VirtualTimeLoop(), Simulation(3, load=["zmesh_test_app"])


SimulatedServicesUnderFaults.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_services_under_faults_in_simulation = pytest.mark.timeout(300)(
    SimulatedServicesUnderFaults.TestCase
)
