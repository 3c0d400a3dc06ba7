"""Anti-entropy of the partitioned store over real tcp nodes (zmesh.testing.Cluster): a
replica that missed writes while apart, and whose hints were lost, converges once it is
reachable again, without a read."""

from __future__ import annotations

import pytest

from zmesh.runtime.kv import KV
from zmesh.testing import Cluster, wait_until


async def open_all(c: Cluster) -> dict[str, KV]:
    stores = {node.name: await node.kv_open("s") for node in c}
    everyone = sorted(c.names)
    await wait_until(lambda: all(s.members() == everyone for s in stores.values()), 5)
    return stores


@pytest.mark.zmesh_nodes(5)
async def test_a_replica_that_missed_writes_converges_after_a_heal_without_a_read(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    s = stores["n1"]
    lagger = "n3"
    keys = [k for i in range(400) if {"n1", lagger} <= set(s.key_to_nodes(k := f"k{i}"))][:30]
    assert keys
    await c.partition([lagger])
    await c.settle()
    for k in keys:
        await s.put(k, k.upper(), w=2)  # n1, the other primary and a fallback for n3
    for store in stores.values():
        store.vnodes.hints.clear()  # the hints for n3 lost with the nodes that held them
    await c.heal()
    await c.settle()
    behind = stores[lagger]

    def caught_up() -> bool:
        return all(behind.vnodes.held(k).values() == [k.upper()] for k in keys)

    await wait_until(caught_up, 5, what="the lagging replica filled by anti-entropy")
    assert behind.stats()["sync_keys_in"] >= len(keys)
    assert behind.stats()["repairs"] == 0  # no read repaired it
    assert await behind.get(keys[0], r=3) == keys[0].upper()
