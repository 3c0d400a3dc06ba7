"""ServiceTable and plan: unit tests and properties (convergence, one starter per name)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.registry_state import Stamp
from zmesh.core.ring import HashRing
from zmesh.core.service_table import (
    Move,
    ServiceSpec,
    ServiceTable,
    Start,
    Stop,
    check_spec,
    has_quorum,
    plan,
)
from zmesh.errors import ConfigError
from zmesh.terms import Pid


def spec(name: str, t: float, node: str = "n1", seq: int = 1, server: str = "m:S") -> ServiceSpec:
    return ServiceSpec(name, server, (), "permanent", False, 3, 5.0, Stamp(t, node, seq))


# -- the table --------------------------------------------------------------------------------


def test_the_earliest_spec_of_a_name_is_the_visible_one() -> None:
    table = ServiceTable()
    late, early = spec("c", 2.0, server="m:Late"), spec("c", 1.0, server="m:Early")
    assert table.add(late)
    assert table.add(early)
    assert table.get("c") == early
    assert not table.add(late)  # nothing changes


def test_a_removal_hides_what_it_covers_and_a_later_spawn_survives_it() -> None:
    table = ServiceTable()
    table.add(spec("c", 1.0))
    upto = table.removal_stamp("c")
    assert upto is not None and table.remove("c", upto)
    assert "c" not in table
    assert not table.add(spec("c", 1.0))  # the removed spec cannot come back
    assert table.add(spec("c", 3.0, seq=2))  # a later spawn of the name can
    assert table.get("c") == spec("c", 3.0, seq=2)


def test_a_removal_seen_before_its_spec_still_removes_it() -> None:
    table = ServiceTable()
    assert not table.remove("c", Stamp(5.0, "n1", 1))
    assert not table.add(spec("c", 1.0))
    assert len(table) == 0


def test_malformed_specs_are_refused_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="module:qualname"):
        check_spec(spec("c", 1.0, server="nocolon"))
    with pytest.raises(ConfigError, match="stamp"):
        check_spec(spec("c", float("nan")))
    with pytest.raises(ConfigError, match="restart"):
        check_spec(ServiceSpec("c", "m:S", (), "temporary", False, 3, 5.0, Stamp(1, "n", 1)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_spec("not a spec")


def test_same_as_ignores_the_stamp_only() -> None:
    assert spec("c", 1.0).same_as(spec("c", 2.0, node="n2"))
    assert not spec("c", 1.0).same_as(spec("c", 1.0, server="m:Other"))


# -- convergence: a state-based CRDT ----------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])
stamps = st.builds(
    Stamp, st.integers(0, 5).map(float), st.sampled_from(["n1", "n2"]), st.integers(0, 2)
)
# A stamp names one spec (its node makes it unique), so the server follows from it.
adds = st.builds(
    lambda n, s: ("add", ServiceSpec(n, f"m:S{s.seq}", (), "permanent", False, 3, 5.0, s)),
    names,
    stamps,
)
removes = st.tuples(st.just("remove"), names, stamps)
ops = st.lists(st.one_of(adds, removes), max_size=30)


def apply(table: ServiceTable, op: tuple[object, ...]) -> None:
    if op[0] == "add":
        table.add(op[1])  # type: ignore[arg-type]
    else:
        table.remove(op[1], op[2])  # type: ignore[arg-type]


def view(table: ServiceTable) -> list[ServiceSpec]:
    return table.specs()


@given(ops, st.randoms(use_true_random=False))
def test_replicas_that_saw_the_same_ops_in_any_order_and_repetition_agree(
    history: list[tuple[object, ...]], rnd: random.Random
) -> None:
    a, b = ServiceTable(), ServiceTable()
    for op in history:
        apply(a, op)
    shuffled = history + rnd.sample(history, k=len(history) // 2)
    rnd.shuffle(shuffled)
    for op in shuffled:
        apply(b, op)
    assert view(a) == view(b)


@given(ops, ops, ops)
def test_merging_snapshots_is_commutative_associative_and_idempotent(
    x: list[tuple[object, ...]], y: list[tuple[object, ...]], z: list[tuple[object, ...]]
) -> None:
    def replica(history: list[tuple[object, ...]]) -> ServiceTable:
        table = ServiceTable()
        for op in history:
            apply(table, op)
        return table

    def merged(*parts: ServiceTable) -> ServiceTable:
        out = ServiceTable()
        for part in parts:
            out.merge(*part.snapshot())
        return out

    rx, ry, rz = replica(x), replica(y), replica(z)
    assert view(merged(rx, ry)) == view(merged(ry, rx))
    assert view(merged(merged(rx, ry), rz)) == view(merged(rx, merged(ry, rz)))
    assert view(merged(rx, rx)) == view(rx)
    # A replica that merges a snapshot ends as if it had seen both histories.
    both = replica(x + y)
    rx.merge(*ry.snapshot())
    assert view(rx) == view(both)


@given(ops)
def test_a_removal_made_from_a_replica_hides_every_spec_of_the_name_it_saw(
    history: list[tuple[object, ...]],
) -> None:
    table = ServiceTable()
    for op in history:
        apply(table, op)
    for name in list(table.names()):
        upto = table.removal_stamp(name)
        assert upto is not None
        table.remove(name, upto)
        assert name not in table
    assert len(table) == 0


# -- placement ---------------------------------------------------------------------------------

P1, P2 = Pid("n1", 1, 1), Pid("n2", 1, 1)


def test_plan_starts_an_unregistered_service_on_its_owner_only() -> None:
    table = ServiceTable()
    table.add(spec("c", 1.0))
    for me in ("n1", "n2"):
        actions = plan(me, ["c"], table, lambda n: "n1", {}, lambda n: None, True)
        assert actions == ([Start("c")] if me == "n1" else [])


def test_plan_moves_an_instance_to_its_new_owner_and_stops_orphans() -> None:
    table = ServiceTable()
    table.add(spec("c", 1.0))
    registered = {"c": P1, "gone": P1}.get
    running = {"c": P1, "gone": P1}
    actions = plan("n1", ["c", "gone"], table, lambda n: "n2", running, registered, True)
    assert actions == [Move("c", "n2"), Stop("gone", "shutdown")]


def test_plan_stops_an_instance_whose_name_went_to_another_pid() -> None:
    table = ServiceTable()
    table.add(spec("c", 1.0))
    actions = plan("n1", ["c"], table, lambda n: "n1", {"c": P1}, lambda n: P2, True)
    assert actions == [Stop("c", "name_conflict")]


def test_plan_without_quorum_stops_quorum_services_and_starts_none() -> None:
    table = ServiceTable()
    table.add(ServiceSpec("q", "m:S", (), "permanent", True, 3, 5.0, Stamp(1.0, "n1", 1)))
    table.add(spec("free", 1.0))
    assert plan("n1", ["q"], table, lambda n: "n1", {"q": P1}, {"q": P1}.get, False) == [
        Stop("q", "shutdown")
    ]
    assert plan("n1", ["q", "free"], table, lambda n: "n1", {}, lambda n: None, False) == [
        Start("free")
    ]


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30, unique=True),
    st.lists(st.sampled_from(["n1", "n2", "n3", "n4"]), min_size=1, max_size=4, unique=True),
)
def test_nodes_that_share_a_view_start_each_service_exactly_once(
    service_names: list[str], members: list[str]
) -> None:
    table = ServiceTable()
    for i, name in enumerate(service_names):
        table.add(spec(name, float(i)))
    ring = HashRing(members)
    starts: dict[str, list[str]] = {}
    for me in members:
        for action in plan(me, service_names, table, ring.key_to_node, {}, lambda n: None, True):
            assert isinstance(action, Start)
            starts.setdefault(action.name, []).append(me)
    assert starts == {name: [ring.key_to_node(name)] for name in service_names}


def test_quorum_needs_a_strict_majority() -> None:
    assert has_quorum(2, 3)
    assert not has_quorum(1, 2)
    assert not has_quorum(2, 4)
    assert has_quorum(1, 1)


def test_a_thousand_services_spread_within_a_fifth_of_the_fair_share_on_five_nodes() -> None:
    members = [f"n{i}" for i in range(1, 6)]
    ring = HashRing(members)
    counts = {m: 0 for m in members}
    for i in range(1000):
        counts[ring.key_to_node(f"svc-{i}")] += 1
    assert all(abs(c - 200) <= 40 for c in counts.values()), counts
    # A sixth node takes only names whose owner changes, and only for itself.
    bigger = HashRing([*members, "n6"])
    moved = [
        i for i in range(1000) if bigger.key_to_node(f"svc-{i}") != ring.key_to_node(f"svc-{i}")
    ]
    assert all(bigger.key_to_node(f"svc-{i}") == "n6" for i in moved)
    assert 0 < len(moved) < 1000 * 2 / 6
