"""The registry's replicated state: properties and a stateful model of replication.

The state machine drives 3-4 replicas through registrations (arbitrated by the name's
leader), unregistrations, process exits, node loss, partitions and heals, with ops
delivered in any order, duplicated and delayed. Invariants: at most one owner per name
on each replica; once every op is delivered and snapshots exchanged, all replicas agree
and every owner is a live process. Bounded: 40 examples of at most 30 steps (~5 s).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmesh.core.registry_state import Conflict, Entry, RegistryState, Stamp, leader_for
from zmesh.terms import Pid

NAMES = ["a", "b", "c"]
NODES = ["n0", "n1", "n2"]

entries = st.builds(
    Entry,
    st.sampled_from(NAMES),
    st.builds(Pid, st.sampled_from(NODES), st.integers(1, 4), st.just(1)),
    st.builds(Stamp, st.integers(0, 5).map(float), st.sampled_from(NODES), st.integers(0, 3)),
)
# A stamp names one registration instance: never two entries with one stamp.
pools = st.lists(entries, min_size=1, max_size=10, unique_by=lambda e: e.stamp)
ops = pools.flatmap(
    lambda pool: st.lists(
        st.tuples(st.sampled_from(["add", "remove"]), st.sampled_from(pool)), max_size=25
    )
)


def apply(state: RegistryState, op: tuple[str, Entry]) -> None:
    kind, entry = op
    if kind == "add":
        state.add(entry, 0.0)
    else:
        state.remove(entry.name, entry.stamp, 0.0)


@given(ops, st.randoms())
def test_any_order_and_duplication_of_ops_converges(history, rnd) -> None:  # type: ignore[no-untyped-def]
    first, second = RegistryState(), RegistryState()
    for op in history:
        apply(first, op)
    shuffled = history + rnd.sample(history, k=len(history) // 2)
    rnd.shuffle(shuffled)
    for op in shuffled:
        apply(second, op)
    for name in NAMES:
        assert first.whereis(name) == second.whereis(name)
    assert sorted(first.snapshot(), key=repr) == sorted(second.snapshot(), key=repr)


@given(ops)
def test_the_owner_is_the_earliest_live_candidate(history) -> None:  # type: ignore[no-untyped-def]
    state = RegistryState()
    for op in history:
        apply(state, op)
    for name in NAMES:
        candidates = [e for e in state.snapshot() if e.name == name]
        expected = min(candidates, key=lambda e: e.stamp).pid if candidates else None
        assert state.whereis(name) == expected


@given(st.lists(entries, max_size=15, unique_by=lambda e: e.stamp))
def test_each_conflict_is_reported_once_per_loser(batch) -> None:  # type: ignore[no-untyped-def]
    state = RegistryState()
    seen = []
    for entry in batch + batch:  # everything twice
        seen += [e for e in state.add(entry, 0.0) if type(e) is Conflict]
    keys = [(c.name, c.loser.stamp) for c in seen]
    assert len(keys) == len(set(keys))


def test_a_removed_registration_never_comes_back() -> None:
    state = RegistryState()
    entry = Entry("x", Pid("n0", 1, 1), Stamp(1.0, "n0", 1))
    state.remove("x", entry.stamp, 0.0)  # the remove overtook the add
    state.add(entry, 0.0)
    assert state.whereis("x") is None
    state.prune(100.0, ttl=10.0)  # beyond the tombstone's life the guarantee ends
    state.add(entry, 100.0)
    assert state.whereis("x") == entry.pid


def test_leader_is_stable_and_moves_minimally() -> None:
    names = [f"name{i}" for i in range(2000)]
    three = {n: leader_for(n, ["a", "b", "c"]) for n in names}
    assert three == {n: leader_for(n, ["c", "a", "b"]) for n in names}  # order-free
    four = {n: leader_for(n, ["a", "b", "c", "d"]) for n in names}
    moved = [n for n in names if three[n] != four[n]]
    assert all(four[n] == "d" for n in moved)
    assert 0.15 < len(moved) / len(names) < 0.35


def test_reservations_grant_one_pid_until_they_expire() -> None:
    state = RegistryState()
    p, q = Pid("n0", 1, 1), Pid("n1", 1, 1)
    assert state.reserve("x", p, now=0.0, hold=5.0)
    assert state.reserve("x", p, now=1.0, hold=5.0)  # idempotent for the holder
    assert not state.reserve("x", q, now=1.0, hold=5.0)
    assert state.reserve("x", q, now=6.0, hold=5.0)  # p's grant expired


@dataclass
class Replica:
    node: str
    state: RegistryState = field(default_factory=RegistryState)
    alive: set[Pid] = field(default_factory=set)
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class Replication(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas = {n: Replica(n) for n in ["r0", "r1", "r2", "r3"]}
        self.inflight: list[tuple[str, str, tuple[str, Entry]]] = []  # (from, to, op)
        self.groups: list[set[str]] = [set(self.replicas)]
        self.clock = 0.0
        self.pid_ids = itertools.count(1)

    def connected(self, a: str, b: str) -> bool:
        return any(a in g and b in g for g in self.groups)

    def broadcast(self, origin: str, op: tuple[str, Entry]) -> None:
        for other in self.replicas:
            if other != origin and self.connected(origin, other):
                self.inflight.append((origin, other, op))

    def resolve(self, replica: Replica, effects: list[object]) -> None:
        """What the runtime does: the loser's own node drops its registration."""
        for effect in effects:
            if type(effect) is Conflict and effect.loser.pid.node == replica.node:
                replica.state.remove(effect.name, effect.loser.stamp, self.clock)
                self.broadcast(replica.node, ("remove", effect.loser))

    @rule(home=st.sampled_from(["r0", "r1", "r2", "r3"]), name=st.sampled_from(NAMES))
    def register(self, home: str, name: str) -> None:
        replica = self.replicas[home]
        pid = Pid(home, next(self.pid_ids), 1)
        replica.alive.add(pid)
        members = sorted(n for n in self.replicas if self.connected(home, n))
        leader = self.replicas[leader_for(name, members)]
        self.clock += 1.0
        if replica.state.whereis(name) is not None:
            return
        if not leader.state.reserve(name, pid, self.clock, hold=1e9):
            return
        entry = Entry(name, pid, Stamp(self.clock, home, next(replica.seq)))
        self.resolve(replica, replica.state.add(entry, self.clock))
        self.broadcast(home, ("add", entry))

    @rule(data=st.data())
    def process_exit(self, data: st.DataObject) -> None:
        live = sorted((p for r in self.replicas.values() for p in r.alive), key=repr)
        if not live:
            return
        pid = data.draw(st.sampled_from(live))
        replica = self.replicas[pid.node]
        replica.alive.discard(pid)
        for entry in replica.state.remove_pid(pid, self.clock):
            self.broadcast(replica.node, ("remove", entry))

    @precondition(lambda self: self.inflight)
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1))
        _origin, target, op = self.inflight[index] if duplicate else self.inflight.pop(index)
        replica = self.replicas[target]
        kind, entry = op
        if kind == "add":
            self.resolve(replica, replica.state.add(entry, self.clock))
        else:
            replica.state.remove(entry.name, entry.stamp, self.clock)

    @rule(split=st.lists(st.booleans(), min_size=4, max_size=4))
    def partition(self, split: list[bool]) -> None:
        """What the runtime sees: each side declares the other down (remove_node), and
        envelopes in flight across the cut are lost (at-most-once)."""
        names = list(self.replicas)
        left = {n for n, s in zip(names, split, strict=True) if s}
        before = self.groups
        self.groups = [g for g in (left, set(names) - left) if g]
        for a in names:
            for b in names:
                was = any(a in g and b in g for g in before)
                if a != b and was and not self.connected(a, b):
                    self.resolve(
                        self.replicas[a], self.replicas[a].state.remove_node(b, self.clock)
                    )
        self.inflight = [m for m in self.inflight if self.connected(m[0], m[1])]

    @rule()
    def heal(self) -> None:
        self.groups = [set(self.replicas)]
        self.exchange_snapshots()

    def exchange_snapshots(self) -> None:
        """On (re)connect each node sends its own processes' names (the runtime's reg.table)."""
        for a in self.replicas.values():
            for b in self.replicas.values():
                if a is not b and self.connected(a.node, b.node):
                    own = a.state.own_entries(a.node)
                    self.resolve(b, b.state.replace_node(a.node, own, self.clock))

    @invariant()
    def at_most_one_owner_per_name(self) -> None:
        for replica in self.replicas.values():
            for name in NAMES:
                owners = {e.pid for e in replica.state.snapshot() if e.name == name}
                owner = replica.state.whereis(name)
                assert owner is None or owner in owners

    def teardown(self) -> None:
        """Drain everything, heal, exchange: every replica agrees, owners are alive."""
        self.groups = [set(self.replicas)]
        rnd = random.Random(0)
        for _ in range(6):
            while self.inflight:
                _origin, target, op = self.inflight.pop(rnd.randrange(len(self.inflight)))
                replica = self.replicas[target]
                kind, entry = op
                if kind == "add":
                    self.resolve(replica, replica.state.add(entry, self.clock))
                else:
                    replica.state.remove(entry.name, entry.stamp, self.clock)
            self.exchange_snapshots()
        alive = {p for r in self.replicas.values() for p in r.alive}
        views = [{n: r.state.whereis(n) for n in NAMES} for r in self.replicas.values()]
        assert all(v == views[0] for v in views), views
        for owner in views[0].values():
            assert owner is None or owner in alive
        for replica in self.replicas.values():  # losers were removed: one candidate per name
            for name in NAMES:
                assert len([e for e in replica.state.snapshot() if e.name == name]) <= 1


Replication.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_replication = Replication.TestCase
