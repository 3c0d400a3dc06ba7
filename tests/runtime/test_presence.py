"""Presence over real tcp nodes: track/list across the cluster, entries leave when the
process exits or its node is lost, come back after a heal, join/update/leave events."""

from __future__ import annotations

import asyncio

import pytest
import zmesh_test_app as app

from zmesh import ConfigError
from zmesh.runtime.presence import PresenceEvent
from zmesh.testing import Cluster, wait_until


def pids(c: Cluster, node: str, topic: str) -> set[object]:
    return {pid for pid, _ in c[node].list(topic)}


@pytest.mark.zmesh_nodes(3)
async def test_tracked_processes_are_listed_everywhere_until_they_exit(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    with pytest.raises(ConfigError, match="presence"):
        c["n1"].list("room")
    for node in c:
        await node.presence()
    p1, p2 = c["n1"].spawn(app.idle), c["n2"].spawn(app.idle)
    assert await c["n1"].track("room", p1, {"user": "ada"})
    assert await c["n2"].track("room", p2, {"user": "bob"})
    await wait_until(lambda: all(pids(c, n, "room") == {p1, p2} for n in c.names), 5)
    assert dict(c["n3"].list("room"))[p1] == {"user": "ada"}
    with pytest.raises(ConfigError):
        await c["n1"].track("room", p2)  # not a process of n1
    c["n1"].exit(p1, "kill")
    await wait_until(lambda: all(pids(c, n, "room") == {p2} for n in c.names), 5)
    await c["n2"].untrack("room", p2)
    await wait_until(lambda: all(c[n].list("room") == [] for n in c.names), 5)
    dead = c["n1"].spawn(app.idle)
    c["n1"].exit(dead, "kill")
    await wait_until(lambda: not c["n1"].is_alive(dead), 5)
    assert not await c["n1"].track("room", dead)


@pytest.mark.zmesh_nodes(3)
async def test_a_lost_node_s_entries_leave_and_return_when_it_heals(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    for node in c:
        await node.presence()
    p3 = c["n3"].spawn(app.idle)
    p1 = c["n1"].spawn(app.idle)
    await c["n3"].track("t", p3, 3)
    await c["n1"].track("t", p1, 1)
    await wait_until(lambda: all(pids(c, n, "t") == {p1, p3} for n in c.names), 5)
    await c.partition(["n3"], ["n1", "n2"])
    await c.settle()
    await wait_until(lambda: pids(c, "n1", "t") == pids(c, "n2", "t") == {p1}, 5)
    await wait_until(lambda: pids(c, "n3", "t") == {p3}, 5)
    await c.heal()
    await c.settle()
    await wait_until(lambda: all(pids(c, n, "t") == {p1, p3} for n in c.names), 5, what="healed")
    await c.kill("n3")
    await c.settle()
    await wait_until(lambda: pids(c, "n1", "t") == pids(c, "n2", "t") == {p1}, 5)


@pytest.mark.zmesh_nodes(2)
async def test_join_update_and_leave_events(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    tracker = await c["n2"].presence()
    await c["n1"].presence()
    seen: list[PresenceEvent] = []

    async def watch() -> None:
        async for event in tracker.events("lobby"):
            seen.append(event)

    task = asyncio.get_running_loop().create_task(watch())
    await asyncio.sleep(0)
    pid = c["n1"].spawn(app.idle)
    await c["n1"].track("lobby", pid, "away")
    await c["n1"].track("elsewhere", pid, "x")  # another topic: not seen
    await wait_until(lambda: len(seen) == 1, 5)
    await c["n1"].track("lobby", pid, "here")
    await wait_until(lambda: len(seen) == 2, 5)
    c["n1"].exit(pid, "kill")
    await wait_until(lambda: len(seen) == 3, 5)
    assert seen == [
        PresenceEvent("join", "lobby", pid, "away"),
        PresenceEvent("update", "lobby", pid, "here"),
        PresenceEvent("leave", "lobby", pid, "here"),
    ]
    task.cancel()
