"""One test per failure users met in Horde and Swarm (shared/reference/horde-swarm-lessons.md),
each on a real Cluster over tcp with real faults under the transport."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest
from ports import free_block

import zmesh
from zmesh import Pid
from zmesh.testing import TEST_CONFIG, Cluster, wait_until

pytestmark = [pytest.mark.zmesh_nodes(3, load=["zmesh_test_app"]), pytest.mark.timeout(90)]

COUNTER = "zmesh_test_app:DistributedCounter"


def owned_by(c: Cluster, owner: str, prefix: str = "svc", among: list[str] | None = None) -> str:
    ring = zmesh.HashRing(among) if among is not None else c[c.live()[0]].ring
    return next(f"{prefix}{i}" for i in range(10_000) if ring.key_to_node(f"{prefix}{i}") == owner)


@contextlib.asynccontextmanager
async def never_two(c: Cluster, names: list[str]) -> AsyncIterator[list[str]]:
    """Sample the instances of `names` every few ms while the block runs, and collect
    every moment two ran at once within one group of connected nodes."""
    seen: list[str] = []

    async def watch() -> None:
        while True:
            for group in c.groups():
                for name in names:
                    here = [p for p in c.instances(name) if p.node in group]
                    if len(here) > 1:
                        seen.append(f"{name}: {here} in {group}")
            await asyncio.sleep(0.002)

    task = asyncio.ensure_future(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_horde_172_specs_live_on_every_node_so_a_lost_child_restarts_elsewhere(
    zmesh_cluster: Cluster,
) -> None:
    """The node that spawned the service dies, then the node that ran it: the third node
    still has the spec and runs it."""
    c = zmesh_cluster
    name = owned_by(c, "n2")
    await c["n1"].spawn_service(name, COUNTER, 0)
    await c.kill("n1")  # the creator
    await c.settle_services()
    assert [p.node for p in c.instances(name)] == ["n2"]
    await c.kill("n2")  # the runner
    await c.settle_services()
    assert [p.node for p in c.instances(name)] == ["n3"]
    assert await c["n3"].call(name, "increment") == 1


async def test_horde_186_a_netsplit_heal_never_drops_the_spec_of_a_registered_service(
    zmesh_cluster: Cluster,
) -> None:
    """Registered and supervised at once: every heal, whatever its timing, ends with the
    spec on every node and exactly one registered instance."""
    c = zmesh_cluster
    names = [owned_by(c, owner, f"s{owner}") for owner in ("n1", "n2", "n3")]
    for name in names:
        await c["n2"].spawn_service(name, COUNTER, 0)
    for alone in ("n1", "n2", "n3", "n1"):
        await c.partition([alone])
        await c.settle_services()
        await c.heal()
        await c.settle_services()
        for name in names:
            assert len(c.instances(name)) == 1
            assert all(n.whereis(name) == c.instances(name)[0] for n in c)
            assert all(name in [s.name for s in n.services()] for n in c)


async def test_horde_196_placement_takes_over_without_a_duplicate_and_heals_deduplicate(
    zmesh_cluster: Cluster,
) -> None:
    """Placement: while the nodes stay connected, a lost node's service is taken over and
    never runs twice. Deduplication: a duplicate made by a split is removed at the heal."""
    c = zmesh_cluster
    names = [owned_by(c, "n3", f"p{i}-") for i in range(5)]
    for name in names:
        await c["n1"].spawn_service(name, COUNTER, 0)
    async with never_two(c, names) as doubles:
        await c.kill("n3")
        await c.settle_services()
        await c.restart("n3")
        await c.settle_services()
    assert doubles == []
    await c.partition(["n3"])
    await c.settle_services()
    assert all(len(c.instances(n)) == 2 for n in names)  # one per side, by design
    await c.heal()
    await c.settle_services()
    assert all(len(c.instances(n)) == 1 for n in names)


async def test_horde_191_after_a_split_all_ten_quorum_services_run_on_the_majority(
    zmesh_cluster: Cluster,
) -> None:
    """3 nodes, 10 workers, split {n1, n2} | {n3}: all 10 run on {n1, n2}, none on n3;
    repeated, since the original passed usually and failed in a loop."""
    c = zmesh_cluster
    names = [f"worker{i}" for i in range(10)]
    await asyncio.gather(*(c["n1"].spawn_service(n, COUNTER, 0, quorum=True) for n in names))
    for _ in range(3):
        await c.partition(["n1", "n2"], ["n3"])
        await c.settle_services()
        nodes = sorted(p.node for n in names for p in c.instances(n))
        assert len(nodes) == 10 and set(nodes) <= {"n1", "n2"}, nodes
        await c.heal()
        await c.settle_services()
        assert sum(len(c.instances(n)) for n in names) == 10


async def test_horde_207_removing_and_readding_nodes_never_multiplies_a_service(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    names = [f"m{i}" for i in range(12)]
    await asyncio.gather(*(c["n1"].spawn_service(n, COUNTER, 0) for n in names))
    async with never_two(c, names) as doubles:
        for _ in range(2):
            await c.leave("n2")
            await c.settle_services()
            await c.restart("n2")
            await c.settle_services()
            await c.kill("n3")
            await c.settle_services()
            await c.restart("n3")
            await c.settle_services()
            assert all(len(c.instances(n)) == 1 for n in names)
    assert doubles == []


async def test_horde_91_a_split_duplicate_is_resolved_and_a_shutdown_loses_nothing(
    zmesh_cluster: Cluster,
) -> None:
    """During a split the other side may start its own instance; after the heal one
    remains; when the node running it shuts down, it is not lost."""
    c = zmesh_cluster
    name = owned_by(c, "n1")
    await c["n2"].spawn_service(name, COUNTER, 0)
    await c.partition(["n1"])
    await c.settle_services()
    assert len(c.instances(name)) == 2
    await c.heal()
    await c.settle_services()
    (pid,) = c.instances(name)
    await c["n2"].call(name, "increment")
    await c.leave(pid.node)
    await c.settle_services()
    assert len(c.instances(name)) == 1
    assert await c[c.live()[0]].call(name, "increment") == 2


async def test_horde_94_a_membership_change_leaves_no_stale_pid_alive(
    zmesh_cluster: Cluster,
) -> None:
    """After the ring moves a service, its old pid is dead (calls to it fail with NoProc)
    and the name leads to the new one."""
    c = zmesh_cluster
    name = owned_by(c, "n3")
    await c.leave("n3")
    old = await c["n1"].spawn_service(name, COUNTER, 0)
    await c.restart("n3")
    await c.settle_services()
    new = c["n1"].whereis(name)
    assert new is not None and new != old and new.node == "n3"
    with pytest.raises(zmesh.NoProc):
        await c["n1"].call(old, "increment", timeout=2)
    assert c[old.node].is_alive(old) is False


async def test_swarm_86_82_after_a_heal_both_instances_do_not_keep_running(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = owned_by(c, "n2")
    await c["n1"].spawn_service(name, COUNTER, 0)
    await c.partition(["n2"])
    await c.settle_services()
    await c.heal()
    await c.settle_services()
    async with never_two(c, [name]) as doubles:
        await asyncio.sleep(0.5)  # and it stays that way
    assert len(c.instances(name)) == 1
    assert doubles == []


async def test_swarm_89_after_a_heal_the_ring_owner_runs_it_with_the_state(
    zmesh_cluster: Cluster,
) -> None:
    """Spawned on the side without its ring owner during a split; at the heal it moves
    to the owner with its state instead of being killed."""
    c = zmesh_cluster
    name = owned_by(c, "n1")
    await c.partition(["n1"])
    await c.settle()
    assert (await c["n2"].spawn_service(name, COUNTER, 0)).node in ("n2", "n3")
    for _ in range(4):
        await c["n3"].call(name, "increment")
    await c.heal()
    await c.settle_services()
    assert [p.node for p in c.instances(name)] == ["n1"]
    assert await c["n2"].call(name, "increment") == 5


async def test_swarm_47_a_killed_nodes_service_restarts_from_init_by_design(
    zmesh_cluster: Cluster,
) -> None:
    """A killed node hands nothing over: the service restarts from its spec's args (the
    README says so and points to handoff, and to replicated data, for state)."""
    c = zmesh_cluster
    name = owned_by(c, "n2")
    await c["n1"].spawn_service(name, COUNTER, 100)
    assert await c["n1"].call(name, "increment") == 101
    await c.kill("n2")
    await wait_until(lambda: "n2" not in c["n1"].nodes(), 2)  # the loss is seen
    assert await c["n1"].call(name, "increment", timeout=5) == 101


async def test_swarm_67_a_handoff_whose_target_dies_midway_keeps_one_instance_and_state(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = owned_by(c, "n3")
    await c.leave("n3")
    async with c["n1"].process() as me:
        await c["n1"].spawn_service(name, "zmesh_test_app:SlowHandoff", 0, me.pid, 0.5)
        for _ in range(3):
            await c["n1"].call(name, "increment")
        await c.restart("n3")
        assert await me.receive(timeout=5) == ("handing_off", c["n1"].whereis(name).node)  # type: ignore[union-attr]
        await c.kill("n3")  # mid-handoff
    await c.settle_services()
    assert len(c.instances(name)) == 1
    assert await c["n2"].call(name, "increment") == 4


async def test_swarm_136_4_nodes_starting_at_once_while_spawning_never_hang() -> None:
    """Four nodes boot at the same moment, each naming the others as seeds, and each
    spawns services right away: nobody waits on a peer that waits on it."""
    cookie = secrets.token_hex(8)
    base = free_block(4)
    addresses = [f"tcp://127.0.0.1:{base + i}" for i in range(4)]
    nodes = [
        zmesh.Node(
            f"b{i}",
            listen=address,
            seeds=[a for a in addresses if a != address],
            cookie=cookie,
            load=["zmesh_test_app"],
            config=TEST_CONFIG,
        )
        for i, address in enumerate(addresses)
    ]
    try:
        await asyncio.gather(*(n.boot() for n in nodes))
        spawns = [
            n.spawn_service(f"boot{i}-{j}", COUNTER, 0, timeout=10)
            for i, n in enumerate(nodes)
            for j in range(5)
        ]
        pids = await asyncio.wait_for(asyncio.gather(*spawns, return_exceptions=True), 30)
        assert all(isinstance(p, Pid) for p in pids), pids
        await wait_until(lambda: all(len(n.nodes()) == 3 for n in nodes), 10)

        def agreed() -> bool:
            for i in range(4):
                for j in range(5):
                    name = f"boot{i}-{j}"
                    seen = {n.whereis(name) for n in nodes}
                    running = [n for n in nodes if n._need_services()._running.get(name)]
                    if len(seen) != 1 or None in seen or len(running) != 1:
                        return False
            return True

        await wait_until(agreed, 15, what="every service once, agreed by all")
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def test_swarm_67_a_target_killed_while_it_restores_leaves_one_instance_with_state(
    zmesh_cluster: Cluster,
) -> None:
    """The target has taken the name and is in `restore` when it dies: the mover's
    takeover fails, and it starts the instance again itself with the state it holds."""
    c = zmesh_cluster
    name = owned_by(c, "n3")
    await c.leave("n3")
    async with c["n1"].process() as me:
        await c["n1"].spawn_service(name, "zmesh_test_app:SlowRestore", 0, me.pid, 0.5)
        for _ in range(3):
            await c["n1"].call(name, "increment")
        await c.restart("n3")
        assert await me.receive(timeout=5) == ("restoring", "n3")
        await c.kill("n3")  # after it registered, before it answered the takeover
    await c.settle_services()
    assert len(c.instances(name)) == 1
    assert await c["n2"].call(name, "increment") == 4
