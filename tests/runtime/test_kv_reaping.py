"""Tombstones of the partitioned store are collected once every member holds the
delete, over real tcp nodes (zmesh.testing.Cluster), and kept while one is out of reach."""

from __future__ import annotations

import pytest

from zmesh.runtime.kv import KV
from zmesh.testing import Cluster, wait_until


async def open_all(c: Cluster) -> dict[str, KV]:
    stores = {node.name: await node.kv_open("s") for node in c}
    everyone = sorted(c.names)
    await wait_until(lambda: all(s.members() == everyone for s in stores.values()), 5)
    return stores


def holding(stores: dict[str, KV], key: str) -> set[str]:
    """The members holding anything for `key`, as a primary or as hints."""
    return {n for n, s in stores.items() if len(s.vnodes.local_view(key))}


def settled(stores: dict[str, KV]) -> bool:
    return all(not s.reaper._pending and not s.fanout.waiting for s in stores.values())


@pytest.mark.zmesh_nodes(5)
async def test_a_deleted_key_is_collected_everywhere_once_every_replica_has_the_delete(
    zmesh_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zmesh.runtime.kv_reaper.REAP_AFTER", 0.05)
    stores = await open_all(zmesh_cluster)
    key, other = "gone", "kept"
    first = stores[stores["n1"].key_to_nodes(key)[0]]
    for k in (key, other):
        await first.put(k, "v", w=3)
    await first.delete(key, w=3)
    assert holding(stores, key) == set(first.key_to_nodes(key))  # the tombstones
    await wait_until(lambda: not holding(stores, key), 5, what="the tombstones collected")
    assert sum(s.stats()["tombstones_reaped"] for s in stores.values()) == 3
    assert await stores["n4"].get(key, "absent", r=3) == "absent"
    assert await stores["n2"].get(other, r=3) == "v"  # nothing else collected
    await stores["n5"].put(key, "back", w=2)  # a key collected can be written again
    assert await stores["n3"].get(key, r=2) == "back"
    await stores["n2"].delete(other)
    await stores["n2"].put(other, "again")  # a write after the delete, before the check
    await wait_until(lambda: settled(stores), 5)
    assert await stores["n1"].get(other, r=3) == "again"


@pytest.mark.zmesh_nodes(5)
async def test_a_tombstone_stays_while_a_member_is_out_of_reach(
    zmesh_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zmesh.runtime.kv_reaper.REAP_AFTER", 0.02)
    c = zmesh_cluster
    stores = await open_all(c)
    key = "gone"
    primaries = stores["n1"].key_to_nodes(key)
    away = next(n for n in c.names if n not in primaries)  # may hold an old copy
    coordinator = stores[primaries[0]]
    await coordinator.put(key, "v", w=3)
    await c.kill(away)
    await c.settle()
    del stores[away]
    await coordinator.delete(key, w=3)
    await wait_until(lambda: settled(stores), 5, what="every check tried and given up")
    assert holding(stores, key) == set(primaries)  # still there: the tombstone wins
    assert sum(s.stats()["tombstones_reaped"] for s in stores.values()) == 0
    assert await stores[primaries[1]].get(key, "absent") == "absent"
