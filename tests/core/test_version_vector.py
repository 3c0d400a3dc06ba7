"""Version vectors and sibling sets: a lattice, and writes that supersede exactly what
their writer had read."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.version_vector import (
    TOMBSTONE,
    Siblings,
    concurrent,
    descends,
    merge,
)

WRITERS = ["a", "b", "c"]
vectors = st.dictionaries(st.sampled_from(WRITERS), st.integers(1, 4))


@given(vectors, vectors, vectors)
def test_merge_is_the_least_upper_bound(x: Any, y: Any, z: Any) -> None:
    m = merge(x, y)
    assert descends(m, x) and descends(m, y)
    assert merge(x, y) == merge(y, x)
    assert merge(merge(x, y), z) == merge(x, merge(y, z))
    assert merge(x, x) == merge(x)
    # Least: anything descending both descends the merge.
    if descends(z, x) and descends(z, y):
        assert descends(z, m)


@given(vectors, vectors)
def test_concurrent_means_neither_descends(x: Any, y: Any) -> None:
    assert concurrent(x, y) == (not descends(x, y) and not descends(y, x))
    assert descends(x, x) and not concurrent(x, x)
    assert concurrent(x, y) == concurrent(y, x)


# Writes by a, b, c, each reading (or not) one of three replicas first; syncs between.
writes = st.tuples(
    st.just("write"),
    st.sampled_from(WRITERS),
    st.integers(0, 2),
    st.booleans(),
    st.integers(0, 99) | st.just(-1),
)
syncs = st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2))
histories = st.lists(st.one_of(writes, syncs), max_size=30)


def run(history: Any, tag: str = "") -> tuple[list[Siblings], list[tuple[Any, Siblings]]]:
    """Apply `history` to three replicas; also return each write with what it read.
    Writers are named with `tag`, so that separate runs never make the same dot."""
    replicas = [Siblings(), Siblings(), Siblings()]
    counters = dict.fromkeys(WRITERS, 0)
    log = []
    for op in history:
        if op[0] == "write":
            _, writer, at, read_first, value = op
            seen = replicas[at]
            context = seen.context() if read_first else {}
            counters[writer] += 1
            sibling = replicas[at].write(
                (writer + tag, counters[writer]), context, TOMBSTONE if value < 0 else value
            )
            log.append((sibling, Siblings(seen.items()) if read_first else Siblings()))
        else:
            replicas[op[2]] = replicas[op[2]].sync(replicas[op[1]])
    return replicas, log


@given(histories, histories, histories)
def test_sync_is_commutative_associative_and_idempotent(h1: Any, h2: Any, h3: Any) -> None:
    x, y, z = run(h1, "1")[0][0], run(h2, "2")[0][1], run(h3, "3")[0][2]
    assert x.sync(y) == y.sync(x)
    assert x.sync(y).sync(z) == x.sync(y.sync(z))
    assert x.sync(x) == x


@given(histories)
def test_no_write_is_lost_unless_a_write_that_read_it_supersedes_it(history: Any) -> None:
    replicas, log = run(history)
    final = replicas[0].sync(replicas[1]).sync(replicas[2])
    alive = {s.dot for s in final.items()}
    for sibling, _ in log:
        if sibling.dot in alive:
            continue
        # Something that survives (or was later superseded) read this write.
        readers = [s for s, _ in log if s.context_vv().get(sibling.dot[0], 0) >= sibling.dot[1]]
        assert readers, f"{sibling} vanished though no write read it"
    # The survivors are mutually concurrent: none had read another.
    for s in final.items():
        for t in final.items():
            if s is not t:
                assert t.context_vv().get(s.dot[0], 0) < s.dot[1]


def test_a_blind_write_keeps_a_concurrent_one_and_a_read_write_resolves_both() -> None:
    r = Siblings()
    r.write(("a", 1), {}, "x")
    r.write(("b", 1), {}, "y")
    assert r.values() == ["x", "y"]
    r.write(("a", 2), r.context(), "z")
    assert r.values() == ["z"] and len(r) == 1
    r.write(("b", 2), r.context(), TOMBSTONE)
    assert r.values() == [] and len(r) == 1


@given(histories, writes)
def test_adding_one_write_is_syncing_with_its_set(history: Any, op: Any) -> None:
    replicas, log = run(history)
    _, writer, at, read_first, value = op
    held = replicas[at]
    context = held.context() if read_first else {}
    dot = (writer + "x", 1)
    sibling = Siblings().write(dot, context, TOMBSTONE if value < 0 else value)
    assert held.add(sibling) == held.sync(Siblings.of(sibling))
    for earlier, _ in log:  # a write seen again, or one another write had read
        assert held.add(earlier) == held.sync(Siblings.of(earlier))


@given(histories, writes)
def test_the_set_of_one_write_reads_and_writes_as_the_general_set(history: Any, op: Any) -> None:
    replicas, _ = run(history)
    _, writer, at, read_first, value = op
    context = replicas[at].context() if read_first else {}
    one = Siblings().write((writer + "x", 1), context, TOMBSTONE if value < 0 else value)
    compact, general = Siblings.of(one), Siblings([one])
    assert compact == general and general == compact
    assert (compact.values(), compact.items(), compact.context(), len(compact)) == (
        general.values(), general.items(), general.context(), len(general)
    )  # fmt: skip
    assert compact.sync(replicas[at]) == general.sync(replicas[at])
    more = compact.context()
    assert compact.write((writer + "y", 1), more, 0) == general.write((writer + "y", 1), more, 0)
    assert compact == general
