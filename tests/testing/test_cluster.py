"""zmesh.testing.Cluster: faults under the transport, over real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest
import zmesh_test_app as app
from hypothesis import HealthCheck, given, settings

import zmesh
from zmesh import Down
from zmesh.testing import Cluster, SettleTimeout
from zmesh.testing.strategies import apply, fault_schedules

pytestmark = pytest.mark.timeout(60)


async def test_the_fixture_gives_a_meshed_cluster(zmesh_cluster: Cluster) -> None:
    assert zmesh_cluster.names == ["n1", "n2", "n3"]
    assert zmesh_cluster["n1"].nodes() == ["n2", "n3"]


@pytest.mark.zmesh_nodes(4)
async def test_the_fixture_size_is_a_marker(zmesh_cluster: Cluster) -> None:
    assert [n.name for n in zmesh_cluster] == ["n1", "n2", "n3", "n4"]


async def test_partition_cuts_both_ways_and_heal_reconnects(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    assert c["n1"].nodes() == [] and c["n2"].nodes() == ["n3"]
    async with c["n2"].process() as me:
        target = c["n1"].spawn(app.echo)
        c["n2"].send(target, (me.pid, "across"))  # n1 is down for n2: dropped
        with pytest.raises(zmesh.ReceiveTimeout):
            await me.receive(timeout=0.3)
    await c.heal()
    await c.settle()
    assert c["n1"].nodes() == ["n2", "n3"]
    async with c["n2"].process() as me:
        c["n2"].send(target, (me.pid, "healed"))
        assert await me.receive(timeout=2) == ("echo", "healed")


async def test_kill_fires_noconnection_on_the_survivors(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    victim = c["n3"].spawn(app.idle)
    async with c["n1"].process() as me:
        ref = me.monitor(victim)
        await asyncio.sleep(0.05)
        await c.kill("n3")
        assert await me.receive(timeout=2) == Down(ref, victim, "noconnection")
    await c.settle()
    assert c["n1"].nodes() == ["n2"]


async def test_pause_is_seen_as_down_and_resume_rejoins(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await c.pause("n2")
    await c.settle(timeout=3)
    assert c["n1"].nodes() == ["n3"]
    await c.resume("n2")
    await c.settle(timeout=5)
    assert c["n2"].nodes() == ["n1", "n3"]


async def test_restart_is_a_new_incarnation_that_rejoins(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    old_pid = c["n2"].spawn(app.idle)
    old_creation = c["n2"].creation
    await c.restart("n2")
    await c.settle()
    assert c["n2"].creation != old_creation
    async with c["n1"].process() as me:
        ref = me.monitor(old_pid)
        assert await me.receive(timeout=2) == Down(ref, old_pid, "noproc")


async def test_drop_all_looks_like_a_partition_and_delay_keeps_order(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    await c.delay("n1", "n2", 0.05)
    async with c["n1"].process() as me:
        sink = c["n2"].spawn(app.sink, me.pid, 200)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(200):
            c["n1"].send(sink, i)
        assert await me.receive(timeout=3) == ("received", 200)
        assert loop.time() - start >= 0.1  # there and back, each delayed
    await c.heal()
    await c.drop("n1", "n3", 1.0)
    while "n3" in c["n1"].nodes():  # every frame lost: heartbeats stop arriving
        await asyncio.sleep(0.02)
    with pytest.raises(SettleTimeout, match="n1 sees"):
        await c.settle(timeout=1.5)  # the drop cut n1-n3, the cluster expects them joined
    await c.heal()
    await c.settle()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedule=fault_schedules(["n1", "n2", "n3"], max_steps=4))
def test_any_fault_schedule_ends_in_a_meshed_cluster(schedule) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with Cluster(3) as c:
            for step in schedule:
                await apply(c, step)
                await asyncio.sleep(0.05)
            await c.settle(timeout=10)
            assert all(n.nodes() == [m for m in c.names if m != n.name] for n in c)

    asyncio.run(run())
