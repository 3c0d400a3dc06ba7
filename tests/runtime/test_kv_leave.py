"""Leaving the partitioned store over real tcp nodes (zmesh.testing.Cluster): a leaving
node's handoff starts no extra ownership pass on its receivers, a node that is leaving
refuses handoffs, and a whole cluster stopping at once hands nothing round in circles."""

from __future__ import annotations

import asyncio
import logging

import pytest

from zmesh.core.kv_placement import partition_nodes
from zmesh.core.kv_wire import encode_siblings
from zmesh.core.version_vector import Sibling, Siblings
from zmesh.runtime.kv import KV
from zmesh.testing import Cluster, wait_until


async def open_all(c: Cluster) -> dict[str, KV]:
    stores = {node.name: await node.kv_open("s") for node in c}
    everyone = sorted(c.names)
    await wait_until(lambda: all(s.members() == everyone for s in stores.values()), 5)
    return stores


async def fill(stores: dict[str, KV], count: int) -> list[str]:
    keys = [f"k{i}" for i in range(count)]
    writers = list(stores.values())
    await asyncio.gather(*(writers[i % len(writers)].put(k, k, w=3) for i, k in enumerate(keys)))
    return keys


def new_primary_pushes(stores: dict[str, KV], leaver: str) -> int:
    """The pushes the members' pass after `leaver` left makes: one per partition a member
    holds and per node that has just become one of its primaries."""
    total = 0
    for name, s in stores.items():
        v = s.vnodes
        old = v.ring  # the members' ring before the leave, `leaver` on it
        new = type(old)(v.known - {leaver}, vnodes=64)
        for part, table in v.data.items():
            before, after = partition_nodes(old, part, v.n), partition_nodes(new, part, v.n)
            if table:
                total += sum(1 for p in after if p != name and p not in before)
    return total


@pytest.mark.zmesh_nodes(5)
async def test_a_leave_costs_its_receivers_one_pass_to_the_new_primaries_only(
    zmesh_cluster: Cluster,
) -> None:
    stores = await open_all(zmesh_cluster)
    keys = await fill(stores, 400)
    leaver = stores.pop("n5")
    expected = new_primary_pushes(stores, "n5")
    assert expected > 0
    await leaver.close()
    await wait_until(
        lambda: all(s.members() == ["n1", "n2", "n3", "n4"] for s in stores.values()), 5
    )
    await wait_until(lambda: not any(s.vnodes.tasks for s in stores.values()), 10)
    # The leaver's own handoff started no pass on a receiver (it did: a full pass each).
    assert sum(s.vnodes.counters["handoffs_out"] for s in stores.values()) == expected
    for k in keys:
        holders = {n for n, s in stores.items() if s.vnodes.held(k).values() == [k]}
        assert holders == set(stores["n1"].key_to_nodes(k)), k


@pytest.mark.zmesh_nodes(3)
async def test_a_store_that_is_leaving_refuses_a_handoff_and_keeps_nothing(
    zmesh_cluster: Cluster,
) -> None:
    stores = await open_all(zmesh_cluster)
    stores["n3"].vnodes.closed = True  # as `leave` marks it before its first push
    one = encode_siblings(Siblings.of(Sibling(("w#1", 1), (), "v")))
    dist = zmesh_cluster["n1"]._dist
    assert dist is not None
    assert await dist.request("n3", "kv.handoff", ["s", [["k", one]]], 5) is False
    assert not stores["n3"].vnodes.held("k").items()
    assert await dist.request("n2", "kv.handoff", ["s", [["k", one]], True], 5) is True
    assert stores["n2"].vnodes.held("k").values() == ["v"]


async def test_a_whole_cluster_stopping_hands_nothing_round_in_circles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Cluster(5)
    await c.__aenter__()
    try:
        await fill(await open_all(c), 300)
    finally:
        with caplog.at_level(logging.WARNING, logger="zmesh.data"):
            await c.close()
    # Every member leaves at once: each refuses the others' handoffs instead of merging
    # them and pushing them on to members that are leaving too (which failed, logged).
    assert not [r for r in caplog.records if "handoff" in r.getMessage()]
