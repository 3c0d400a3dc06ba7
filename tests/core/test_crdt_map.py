"""The add-wins LWW map CRDT: a lattice (commutative, associative, idempotent join),
convergence of deltas under any order and duplication, add-wins, bounded memory."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.crdt_map import CausalContext, MapState

REPLICAS = ["a", "b", "c"]
KEYS = ["k1", "k2", "k3", 4, ("t", 5)]

puts = st.tuples(
    st.just("put"), st.sampled_from(REPLICAS), st.sampled_from(KEYS), st.integers(0, 9)
)
deletes = st.tuples(st.just("delete"), st.sampled_from(REPLICAS), st.sampled_from(KEYS))
syncs = st.tuples(st.just("sync"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS))
ops = st.lists(st.one_of(puts, puts, deletes, syncs), max_size=40)


def run(
    history: list[tuple[Any, ...]], tag: str = ""
) -> tuple[dict[str, MapState], list[MapState]]:
    """Apply `history` to replicas a, b, c; return them and every delta made.
    Replica ids carry `tag`, so that separate runs never make the same dot."""
    replicas = {r: MapState() for r in REPLICAS}
    deltas: list[MapState] = []
    for op in history:
        if op[0] == "put":
            deltas.append(replicas[op[1]].put(op[1] + tag, op[2], op[3]))
        elif op[0] == "delete":
            delta = replicas[op[1]].delete(op[1] + tag, op[2])
            if delta is not None:
                deltas.append(delta)
        else:
            replicas[op[2]].join(replicas[op[1]].copy())
    return replicas, deltas


def joined(*states: MapState) -> MapState:
    out = MapState()
    for state in states:
        out.join(state.copy())
    return out


@given(ops, ops, ops)
def test_join_is_commutative_associative_and_idempotent(h1: Any, h2: Any, h3: Any) -> None:
    x, y, z = (run(h, tag)[0]["a"] for h, tag in ((h1, "1"), (h2, "2"), (h3, "3")))
    assert joined(x, y) == joined(y, x)
    assert joined(joined(x, y), z) == joined(x, joined(y, z))
    assert joined(x, x) == joined(x)
    assert joined(x, y).to_dict() == joined(y, x).to_dict()


@given(ops, st.randoms(use_true_random=False), st.data())
def test_deltas_converge_under_any_order_and_duplication(
    history: Any, rnd: Any, data: st.DataObject
) -> None:
    replicas, deltas = run(history)
    full = joined(*replicas.values())
    for _ in range(2):
        shuffled = (
            deltas + data.draw(st.lists(st.sampled_from(deltas), max_size=10)) if deltas else []
        )
        rnd.shuffle(shuffled)
        fresh = MapState()
        for delta in shuffled:
            fresh.join(delta.copy())
        assert fresh.to_dict() == full.to_dict()
        assert fresh.entries == full.entries
        assert fresh.context == full.context


@given(ops)
def test_every_replica_is_equal_after_full_exchange_and_holds_no_tombstones(
    history: Any,
) -> None:
    replicas, _ = run(history)
    full = joined(*replicas.values())
    for state in replicas.values():
        state.join(full.copy())
        assert state == full
        # Every gap is filled: the context is a plain version vector, no cloud.
        assert state.context.dots() == 0
        # Retired dots are gone; only concurrent puts may leave more than one per key.
        assert state.dot_count() <= len(state) * len(REPLICAS)


@given(st.lists(st.one_of(puts, deletes), max_size=40))
def test_one_replica_behaves_as_a_dict(history: Any) -> None:
    state, model = MapState(), {}
    for op in history:
        if op[0] == "put":
            changes = state.put("a", op[2], op[3])
            model[op[2]] = op[3]
            assert changes.to_dict() == {op[2]: op[3]}
        else:
            state.delete("a", op[2])
            model.pop(op[2], None)
        assert state.to_dict() == model
        assert state.dot_count() == len(model)
        assert state.context.dots() == 0


def test_a_put_concurrent_with_a_delete_wins() -> None:
    a, b = MapState(), MapState()
    b.join(a.put("a", "k", 1).copy())
    delete = b.delete("b", "k")
    put = a.put("a", "k", 2)
    assert delete is not None
    a.join(delete)
    b.join(put)
    assert a.to_dict() == b.to_dict() == {"k": 2}


def test_concurrent_puts_keep_the_highest_stamp_then_replica() -> None:
    a, b = MapState(), MapState()
    b.join(a.put("a", "x", 0))  # b's clock is now ahead
    db = b.put("b", "k", "from b")
    da = a.put("a", "k", "from a")
    a.join(db)
    b.join(da)
    assert a.get("k") == b.get("k") == "from b"  # same stamp 2: replica "b" > "a"
    assert a.dot_count() == 3  # x, and both concurrent dots of k
    a.put("a", "k", "resolved")  # a later write retires both
    assert a.dot_count() == 2


@given(ops, ops)
def test_join_reports_exactly_the_visible_changes(h1: Any, h2: Any) -> None:
    x, y = run(h1, "1")[0]["a"], run(h2, "2")[0]["b"]
    before = x.to_dict()
    changes = x.join(y.copy())
    after = x.to_dict()
    expected = {
        k: (before.get(k), after.get(k))
        for k in set(before) | set(after)
        if (k in before) != (k in after) or before.get(k) != after.get(k)
    }
    assert changes == expected


def test_causal_context_compacts_once_the_gap_is_filled() -> None:
    ctx = CausalContext()
    ctx.add(("a", 3))
    ctx.add(("a", 1))
    assert ctx.dots() == 1 and ("a", 3) in ctx and ("a", 2) not in ctx
    ctx.add(("a", 2))
    assert ctx.dots() == 0 and ctx.vv == {"a": 3}
    other = CausalContext({"b": 2}, {("a", 5)})
    ctx.join(other)
    assert ctx.vv == {"a": 3, "b": 2} and ctx.cloud == {("a", 5)}
    ctx.join(CausalContext({"a": 4}))
    assert ctx.vv == {"a": 5, "b": 2} and ctx.dots() == 0
