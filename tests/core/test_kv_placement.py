"""Placement of the partitioned store: partitions, preference lists and fallbacks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.kv_placement import (
    key_to_nodes,
    key_to_partition,
    partition_nodes,
    preference_list,
)
from zmesh.core.ring import HashRing
from zmesh.errors import ConfigError

NAMES = [f"n{i}" for i in range(1, 8)]
members = st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True)
keys = st.text(max_size=8) | st.integers() | st.binary(max_size=8)


@given(keys, st.integers(1, 256))
def test_a_key_has_one_partition_in_range(key: Any, partitions: int) -> None:
    p = key_to_partition(key, partitions)
    assert 0 <= p < partitions
    assert key_to_partition(key, partitions) == p


@given(members, keys, st.integers(1, 5), st.integers(1, 64))
def test_a_key_lives_on_n_distinct_nodes_of_its_partition(
    names: Any, key: Any, n: int, partitions: int
) -> None:
    ring = HashRing(names, vnodes=16)
    nodes = key_to_nodes(ring, key, n, partitions)
    assert len(nodes) == min(n, len(names)) == len(set(nodes))
    assert nodes == partition_nodes(ring, key_to_partition(key, partitions), n)
    assert nodes[0] == ring.key_to_node(("zmesh.kv", key_to_partition(key, partitions)))


@given(members, st.data(), st.integers(1, 4), st.integers(0, 31))
def test_fallbacks_stand_in_for_each_down_primary(
    names: Any, data: st.DataObject, n: int, partition: int
) -> None:
    ring = HashRing(names, vnodes=16)
    up = set(data.draw(st.lists(st.sampled_from(names), unique=True)))
    targets = preference_list(ring, partition, n, up)
    primaries = partition_nodes(ring, partition, n)
    chosen = [t.node for t in targets]
    assert len(chosen) == len(set(chosen)) == min(n, len(primaries), len(up))
    assert all(node in up for node in chosen)
    assert [t.node for t in targets if t.hint_for is None] == [p for p in primaries if p in up]
    hinted = [t.hint_for for t in targets if t.hint_for is not None]
    assert all(h in primaries and h not in up for h in hinted)
    assert all(t.node not in primaries for t in targets if t.hint_for is not None)
    if set(primaries) <= up:
        assert hinted == []


def test_bad_counts_are_refused() -> None:
    ring = HashRing(["a"])
    with pytest.raises(ConfigError):
        key_to_partition("k", 0)
    with pytest.raises(ConfigError):
        preference_list(ring, 0, 0, {"a"})
