"""What one KV operation costs on the wire, counted in envelopes over real tcp nodes
(zmesh.testing.Cluster, no heartbeats to blur the counts), and a read that returns
once `r` replicas answered while another is paused, repairing it afterwards."""

from __future__ import annotations

import asyncio

import pytest

from zmesh import NodeConfig
from zmesh.core.version_vector import Siblings
from zmesh.runtime.kv import KV
from zmesh.testing import Cluster, wait_until

QUIET = NodeConfig(tick=30.0, down_after=60.0)  # no heartbeat while we count


class QuietCluster(Cluster):
    """Nodes without heartbeats (a 30 s tick): settled once sessions are stable 0.3 s,
    not two ticks."""

    async def settle(self, timeout: float = 10.0, *, stable_for: float | None = None) -> float:
        return await super().settle(timeout, stable_for=stable_for or 0.3)


async def open_all(c: Cluster) -> dict[str, KV]:
    stores = {node.name: await node.kv_open("s") for node in c}
    everyone = sorted(c.names)
    await wait_until(lambda: all(s.members() == everyone for s in stores.values()), 5)
    return stores


def sent_by(c: Cluster, name: str) -> int:
    """Envelopes from `name`, as its peers counted them in."""
    return sum(c[p].peer_stats()[name]["envelopes_in"] for p in c.names if p != name)


def received_by(c: Cluster, name: str) -> int:
    return sum(s["envelopes_in"] for s in c[name].peer_stats().values())


async def count(c: Cluster, name: str, operation: object) -> tuple[int, int]:
    """(envelopes sent, envelopes received) by `name` for `await operation`."""
    await asyncio.sleep(0.05)
    out, into = sent_by(c, name), received_by(c, name)
    await operation  # type: ignore[misc]
    await asyncio.sleep(0.05)  # whatever the operation left in flight lands
    return sent_by(c, name) - out, received_by(c, name) - into


def key_where(s: KV, local: bool) -> str:
    return next(
        k for i in range(1000) if ((s.vnodes.node.name in s.key_to_nodes(k := f"k{i}")) == local)
    )


async def test_a_get_or_put_costs_one_envelope_per_replica_it_needs() -> None:
    async with QuietCluster(5, config=QUIET) as c:
        await one_operation_each(c)


async def one_operation_each(c: Cluster) -> None:
    stores = await open_all(c)
    s = stores["n1"]
    mine, theirs = key_where(s, local=True), key_where(s, local=False)
    for key in (mine, theirs):
        await s.put(key, "v0", w=3)
    # n1 is a replica: its own answer plus one remote read (r=2), one answer back.
    assert await count(c, "n1", s.get(mine, r=2)) == (1, 1)
    # n1 is not: two replicas read, two answers.
    assert await count(c, "n1", s.get(theirs, r=2)) == (2, 2)
    # A put on a replica: the write to each of the two others, one acknowledgement
    # awaited (w=2 counts n1's own); the other replica applies it unasked.
    assert await count(c, "n1", s.put(mine, "v1", w=2)) == (2, 1)
    # Elsewhere: forwarded to the key's coordinator, which answers once w have it.
    assert await count(c, "n1", s.put(theirs, "v1", w=2)) == (1, 1)
    for key in (mine, theirs):
        assert await stores["n3"].get(key, r=3) == "v1"


async def test_pipelined_puts_share_envelopes() -> None:
    async with QuietCluster(5, config=QUIET) as c:
        await pipelined(c)


async def pipelined(c: Cluster) -> None:
    stores = await open_all(c)
    s = stores["n1"]
    keys = [k for i in range(2000) if "n1" in s.key_to_nodes(k := f"p{i}")][:200]

    async def puts() -> None:
        await asyncio.gather(*(s.put(k, k, w=2) for k in keys))

    sent, received = await count(c, "n1", puts())
    # 200 puts issued in one turn of the loop: to each of the (at most 4) other nodes
    # the first write at once and the rest in one batch, not 400 envelopes out and
    # 200 back.
    assert sent <= 8 and received <= 8, (sent, received)
    for k in keys[::20]:
        assert await stores["n4"].get(k) == k


@pytest.mark.zmesh_nodes(5)
async def test_a_get_returns_at_r_while_a_replica_is_paused_and_repairs_it_after(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    s = stores["n1"]
    key = key_where(s, local=True)
    asked, other = [n for n in s.key_to_nodes(key) if n != "n1"]  # read first: `asked`
    await s.put(key, "old", w=3)
    part = s.vnodes.partition(key)
    stale = stores[asked].vnodes.data[part][key]
    await s.put(key, "new", w=3)
    stores[asked].vnodes.data[part][key] = stale  # `asked` missed the new write
    await c.pause(asked)
    assert await s.get(key, r=2) == "new"  # n1's own answer and `other`'s, not `asked`'s
    assert asked in c["n1"].nodes()  # returned before the pause was even noticed
    assert len(s.fanout.waiting) == 1  # still waiting for `asked`, to repair it
    await c.resume(asked)

    def repaired() -> bool:
        held: Siblings = stores[asked].vnodes.held(key)
        return held.values() == ["new"]

    await wait_until(repaired, 5, what="the paused replica repaired once it answered")
    assert stores[asked].stats()["repairs"] == 1
    assert not s.fanout.waiting
    assert stores[other].vnodes.held(key).values() == ["new"]


@pytest.mark.zmesh_nodes(5)
async def test_a_put_whose_asked_replica_is_paused_is_acknowledged_by_the_other(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    s = stores["n1"]
    key = key_where(s, local=True)
    asked, spare = [n for n in s.key_to_nodes(key) if n != "n1"]  # acknowledges first: `asked`
    await c.pause(asked)
    await s.put(key, "v", w=2)  # n1's own and, once `asked` is late, `spare`'s
    assert asked in c["n1"].nodes()  # acknowledged before the pause was even noticed
    assert stores[spare].vnodes.held(key).values() == ["v"]
    await c.resume(asked)
    await wait_until(lambda: stores[asked].vnodes.held(key).values() == ["v"], 5)
    await wait_until(lambda: not s.fanout.waiting, 5)
