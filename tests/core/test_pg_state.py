"""PgState: join counts, node loss and the authoritative snapshot of a node."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.pg_state import PgState
from zmesh.errors import ConfigError
from zmesh.terms import Pid

GROUPS = ["g", "h", "workers"]
NODES = ["n0", "n1", "n2"]
P = Pid("n0", 1, 1)
Q = Pid("n1", 1, 1)

pids = st.builds(Pid, st.sampled_from(NODES), st.integers(1, 3), st.integers(1, 2))
memberships = st.tuples(st.sampled_from(GROUPS), pids)
# ("join" | "leave" | "exit", group, pid); "exit" ignores the group.
ops = st.lists(st.tuples(st.sampled_from(["join", "join", "leave", "exit"]), memberships))


def run(ops: list[tuple[str, tuple[str, Pid]]]) -> tuple[PgState, Counter[tuple[str, Pid]]]:
    """Apply `ops` to a PgState and to a plain multiset model of the same."""
    state, model = PgState(), Counter[tuple[str, Pid]]()
    for kind, (group, pid) in ops:
        if kind == "join":
            assert state.join(group, pid) == model[(group, pid)] + 1
            model[(group, pid)] += 1
        elif kind == "leave":
            assert state.leave(group, pid) == (model[(group, pid)] > 0)
            model[(group, pid)] -= 1
        else:
            left = {g: model[(g, pid)] for g in GROUPS if model[(g, pid)] > 0}
            assert state.remove_pid(pid) == left
            for g in GROUPS:
                del model[(g, pid)]
        model = +model  # drop zero and negative counts
    return state, model


def view(state: PgState) -> dict[str, list[Pid]]:
    return {group: state.members(group) for group in state.groups()}


@given(ops)
def test_members_count_each_join_until_a_leave_or_exit_undoes_it(ops: Any) -> None:
    state, model = run(ops)
    assert state.groups() == sorted({g for g, _ in model})
    for group in GROUPS:
        expected = Counter({pid: n for (g, pid), n in model.items() if g == group})
        assert Counter(state.members(group)) == expected
        for node in NODES:
            assert state.local_members(group, node) == [
                p for p in state.members(group) if p.node == node
            ]
        for pid in {pid for _, pid in model}:
            assert state.count(group, pid) == model[(group, pid)]


@given(ops, st.randoms(use_true_random=False))
def test_members_are_listed_in_the_same_order_whatever_the_join_order(ops: Any, rnd: Any) -> None:
    joins = [op for op in ops if op[0] == "join"]
    shuffled = list(joins)
    rnd.shuffle(shuffled)
    assert view(run(joins)[0]) == view(run(shuffled)[0])


@given(ops, st.sampled_from(NODES))
def test_remove_node_drops_exactly_that_nodes_memberships(ops: Any, node: str) -> None:
    state, model = run(ops)
    state.remove_node(node)
    assert state.own_memberships(node) == []
    for group in GROUPS:
        assert state.local_members(group, node) == []
        expected = Counter({p: n for (g, p), n in model.items() if g == group and p.node != node})
        assert Counter(state.members(group)) == expected


@given(ops, ops, st.sampled_from(NODES))
def test_replace_node_installs_the_nodes_snapshot_and_is_idempotent(
    mine: Any, theirs: Any, node: str
) -> None:
    """A peer's authoritative snapshot replaces what we held for it, leaving other nodes'
    memberships alone; installing it again changes nothing."""
    local, _ = run(mine)
    peer, _ = run(theirs)
    snapshot = peer.own_memberships(node)
    others_before = {n: local.own_memberships(n) for n in NODES if n != node}
    local.replace_node(node, snapshot)
    assert local.own_memberships(node) == snapshot
    assert {n: local.own_memberships(n) for n in NODES if n != node} == others_before
    once = view(local)
    local.replace_node(node, snapshot)
    assert view(local) == once


@given(ops, st.sampled_from(NODES))
def test_own_memberships_rebuild_the_nodes_groups(ops: Any, node: str) -> None:
    state, _ = run(ops)
    copy = PgState()
    for group, pid in state.own_memberships(node):
        copy.join(group, pid)
    for group in GROUPS:
        assert copy.members(group) == state.local_members(group, node)


def test_a_pid_joins_several_times_and_leaves_one_join_at_a_time() -> None:
    state = PgState()
    assert state.join("g", P) == 1
    assert state.join("g", P) == 2
    state.join("g", Q)
    assert state.members("g") == [P, P, Q]
    assert state.leave("g", P)
    assert state.members("g") == [P, Q]
    assert state.groups_of(P) == ["g"]
    assert state.leave("g", P)
    assert not state.leave("g", P)
    assert state.members("g") == [Q]
    assert not state.leave("other", Q)


def test_remove_pid_reports_the_joins_it_undid() -> None:
    state = PgState()
    for group in ["g", "g", "h"]:
        state.join(group, P)
    state.join("h", Q)
    assert state.remove_pid(P) == {"g": 2, "h": 1}
    assert state.groups() == ["h"] and state.groups_of(P) == []
    assert state.remove_pid(P) == {}


def test_members_returns_a_copy() -> None:
    state = PgState()
    state.join("g", P)
    state.members("g").append(Q)
    assert state.members("g") == [P]


def test_an_empty_group_is_gone() -> None:
    state = PgState()
    state.join("g", P)
    state.leave("g", P)
    assert state.groups() == [] and state.members("g") == []


@pytest.mark.parametrize("bad", ["", "x" * 256, 7, None, ("g",)])
def test_invalid_group_names_are_refused_naming_the_value(bad: Any) -> None:
    state = PgState()
    for call in (
        lambda: state.join(bad, P),
        lambda: state.leave(bad, P),
        lambda: state.members(bad),
        lambda: state.replace_node("n0", [(bad, P)]),
    ):
        with pytest.raises(ConfigError, match="group name"):
            call()


def test_replace_node_refuses_another_nodes_pid_and_changes_nothing() -> None:
    state = PgState()
    state.join("g", P)
    with pytest.raises(ConfigError, match="another node"):
        state.replace_node("n0", [("h", P), ("h", Q)])
    with pytest.raises(ConfigError, match="Pid"):
        state.join("g", "n0.1")  # type: ignore[arg-type]
    assert state.own_memberships("n0") == [("g", P)]
