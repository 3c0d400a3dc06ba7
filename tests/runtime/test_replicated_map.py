"""ReplicatedMap over real tcp nodes (zmesh.testing.Cluster): local writes replicate,
partitions converge on heal, late and restarted members catch up, change events,
bounded memory, and malformed peer messages refused and counted."""

from __future__ import annotations

import asyncio

import pytest

import zmesh
from zmesh import ConfigError, EncodeError, KeyTypeError, RemoteError
from zmesh.core.crdt_wire import encode_state
from zmesh.runtime.replicated_map import Change, ReplicatedMap
from zmesh.testing import Cluster, wait_until


def equal(maps: list[ReplicatedMap]) -> bool:
    first = maps[0].to_dict()
    return all(m.to_dict() == first for m in maps[1:])


async def open_all(c: Cluster, name: str = "m") -> list[ReplicatedMap]:
    maps = [await node.replicated_map(name) for node in c]
    await wait_until(lambda: all(len(m.members()) == len(c) - 1 for m in maps), 5)
    return maps


@pytest.mark.zmesh_nodes(3)
async def test_a_local_write_is_read_at_once_and_reaches_every_member(
    zmesh_cluster: Cluster,
) -> None:
    m1, m2, m3 = await open_all(zmesh_cluster)
    m1.put("user:1", {"name": "ada", "tags": ("x", 1)})
    assert m1.get("user:1") == {"name": "ada", "tags": ("x", 1)}  # no round trip
    assert m2.get("user:1") is None
    await wait_until(lambda: m2.get("user:1") == m3.get("user:1") == m1.get("user:1"), 5)
    assert m3["user:1"]["tags"] == ("x", 1)  # tuples survive the wire
    m2.delete("user:1")
    assert "user:1" not in m2
    await wait_until(lambda: len(m1) == len(m3) == 0, 5)
    with pytest.raises(KeyError):
        m1["user:1"]


@pytest.mark.zmesh_nodes(3)
async def test_bad_keys_and_values_are_refused_before_anything_is_written(
    zmesh_cluster: Cluster,
) -> None:
    (m1, *_) = await open_all(zmesh_cluster)
    with pytest.raises(KeyTypeError):
        m1.put(1.5, "x")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        m1.put("k", object())
    with pytest.raises(ConfigError):
        await zmesh_cluster["n1"].replicated_map("")
    assert len(m1) == 0 and m1.memory()["writers"] == 0


@pytest.mark.zmesh_nodes(3)
async def test_writes_on_both_sides_of_a_partition_converge_on_heal(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    m1, m2, m3 = await open_all(c)
    for i in range(20):
        m1.put(i, "before")
    await wait_until(lambda: len(m3) == 20, 5)
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    for i in range(10):
        m1.put(i, "n1 side")  # concurrent with n3's puts of the same keys
        m3.put(i, "n3 side")
    m1.delete(15)  # only n1 deletes 15
    m2.delete(16)
    m3.put(16, "put again")  # a put after n2's delete, on n2's side
    m1.put("only-n1", 1)
    m2.put("only-n2", 2)
    await c.heal()
    await c.settle()
    await wait_until(lambda: equal([m1, m2, m3]), 5, what="replicas equal after heal")
    view = m1.to_dict()
    assert 15 not in view and view[16] == "put again"
    assert view["only-n1"] == 1 and view["only-n2"] == 2
    assert all(view[i] in ("n1 side", "n3 side") for i in range(10))
    assert all(view[i] == "before" for i in range(10, 20) if i not in (15, 16))
    for m in (m1, m2, m3):
        assert m.memory()["gaps"] == 0  # no tombstones: every gap filled


@pytest.mark.zmesh_nodes(3)
async def test_a_put_concurrent_with_a_delete_wins(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    m1, m2, m3 = await open_all(c)
    m1.put("k", "v1")
    await wait_until(lambda: m2.get("k") == "v1", 5)
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    m1.put("k", "v2")
    m2.delete("k")
    await c.heal()
    await c.settle()
    await wait_until(lambda: m1.get("k") == m2.get("k") == m3.get("k") == "v2", 5)


@pytest.mark.zmesh_nodes(3)
async def test_a_late_opener_and_a_restarted_node_get_the_full_state(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    m1 = await c["n1"].replicated_map("late")
    for i in range(9000):  # more than two state chunks
        m1.put(f"k{i}", i)
        if i % 500 == 499:  # let heartbeats through: the test config's down_after is 0.6 s
            await asyncio.sleep(0)
    m1.delete("k5")
    m2 = await c["n2"].replicated_map("late")
    await wait_until(lambda: m2.to_dict() == m1.to_dict(), 10, what="late opener caught up")
    await c.restart("n3")
    await c.settle()
    m3 = await c["n3"].replicated_map("late")
    m3.put("from-new-n3", True)
    await wait_until(lambda: equal([m1, m2, m3]) and len(m3) == 9000, 10)
    assert m1.get("k5") is None and m1.get("from-new-n3") is True


@pytest.mark.zmesh_nodes(2)
async def test_changes_yield_local_and_remote_changes_with_old_and_new(
    zmesh_cluster: Cluster,
) -> None:
    m1, m2 = await open_all(zmesh_cluster)
    seen: list[Change] = []

    async def watch() -> None:
        async for change in m2.changes():
            seen.append(change)

    task = asyncio.get_running_loop().create_task(watch())
    await asyncio.sleep(0)
    m1.put("a", 1)
    await wait_until(lambda: m2.get("a") == 1, 5)
    m2.put("a", 2)
    await wait_until(lambda: m1.get("a") == 2, 5)  # else the delete would not see it
    m1.delete("a")
    await wait_until(lambda: len(seen) == 3, 5)
    assert seen == [Change("a", None, 1), Change("a", 1, 2), Change("a", 2, None)]
    await m2.close()
    await asyncio.wait_for(task, 5)  # the iterator ends with the map
    await wait_until(lambda: m1.members() == [], 5)  # its bye arrived


@pytest.mark.zmesh_nodes(2)
async def test_malformed_map_messages_are_refused_counted_and_harmless(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    m1, m2 = await open_all(c)
    dist = c["n1"]._dist
    assert dist is not None
    bad = [
        ("map.delta", "not a list"),
        ("map.delta", ["m"]),
        ("map.delta", ["m", [[["k", [["r", 0, 1, 1]]]], [], [], 1, ["k"]]]),  # counter 0
        ("map.delta", ["m", [[["k", [["r", 1, 1, 1]]]], [], [], 1, ["k"]]]),  # dot unseen
        ("map.delta", ["m", [[[1.5, [["r", 1, 1, 1]]]], [["r", 1]], [], 1, [1.5]]]),
        ("map.delta", ["m", [[["k", [["r", 1, 1, 1]]]], [["r", 1]], [], 1, []]]),  # scope
        ("map.state", ["m", "x", [], None]),
        ("map.state", ["m", 7, [], ["bad tail"]]),
        ("map.state", ["m", 8, [["k", []]], [[], [], 0]]),  # an empty entry in a state
    ]
    before = c["n2"].stats().get("bad_data", 0)
    for op, body in bad:
        assert dist.cast("n2", op, body)
    await wait_until(lambda: c["n2"].stats().get("bad_data", 0) - before == len(bad), 5)
    assert len(m2) == 0
    with pytest.raises(RemoteError):
        await dist.request("n2", "map.hello", 42, 5)
    assert c["n2"].stats()["bad_requests"] == 1
    m1.put("still", "works")
    await wait_until(lambda: m2.get("still") == "works", 5)


@pytest.mark.zmesh_nodes(2)
async def test_a_lost_delta_is_made_up_by_the_periodic_digest(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    m1, m2 = await open_all(c)
    m1._state.put(m1._replica, "lost", 1)  # written, but its delta never sent
    await asyncio.sleep(0.1)
    assert "lost" not in m2
    await wait_until(lambda: m2.get("lost") == 1, 5, what="made up by a digest")
    dist = c["n1"]._dist
    assert dist is not None
    before = c["n2"].stats().get("bad_data", 0)
    dist.cast("n2", "map.digest", ["m", [["r", -1]], []])
    dist.cast("n2", "map.digest", ["m", "vv"])
    await wait_until(lambda: c["n2"].stats().get("bad_data", 0) == before + 2, 5)


@pytest.mark.zmesh_nodes(2)
async def test_a_killed_node_s_digest_timer_stops(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await open_all(c)
    router = c["n2"]._data_maps
    await c.kill("n2")
    loop = asyncio.get_running_loop()
    await asyncio.sleep(2.2)  # more than two periods: at most one tick ran after the kill
    assert router._timer.when() < loop.time()  # it did not schedule another


@pytest.mark.zmesh_nodes(5)
async def test_a_heal_exchanging_states_of_many_chunks_loses_no_key(
    zmesh_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several full states from one sender may be under way at once (hello, digest):
    their chunks must not be mixed (a tail's context over another sync's entries
    retired the keys it did not carry: 10,000 keys healed to 1,808)."""
    monkeypatch.setattr("zmesh.runtime.replicated_map.CHUNK", 16)
    monkeypatch.setattr("zmesh.runtime.map_router.DIGEST_EVERY", 0.02)  # states overlap
    c = zmesh_cluster
    maps = await open_all(c)
    await c.partition(["n1", "n2"], ["n3", "n4", "n5"])
    await c.settle()
    for i in range(500):
        maps[0].put(("a", i), i)
        maps[2].put(("b", i), i)
    await wait_until(lambda: len(maps[1]) == len(maps[4]) == 500, 5)
    await c.heal()
    await c.settle()
    await wait_until(lambda: all(len(m) == 1000 for m in maps), 10, what="every key everywhere")
    await asyncio.sleep(0.3)  # states still under way must not take any key away
    assert all(len(m) == 1000 for m in maps) and equal(maps)


async def test_interleaved_state_chunks_from_one_sender_are_kept_apart(
    two_nodes: tuple[zmesh.Node, zmesh.Node],
) -> None:
    """A peer's chunks of two syncs, interleaved on the wire, make two whole states."""
    a, b = two_nodes
    ma, mb = await a.replicated_map("m"), await b.replicated_map("m")
    await wait_until(lambda: ma.members() == ["b"] and mb.members() == ["a"], 5)
    for i in range(6):
        mb.put(i, i)
    await wait_until(lambda: len(ma) == 6, 5)
    wire = encode_state(mb._state)
    entries, tail = wire[0], [wire[1], wire[2], wire[3], len(wire[0])]
    dist = b._need_dist()
    for body in (
        ["m", 901, entries[:3], None],
        ["m", 902, entries[:3], None],
        ["m", 901, entries[3:], tail],
        ["m", 902, entries[3:], tail],
    ):
        dist.cast("a", "map.state", body)
    await wait_until(lambda: ma.stats["states_in"] >= 2 + 1, 5)
    assert ma.to_dict() == {i: i for i in range(6)}
    dist.cast("a", "map.state", ["m", 903, entries[3:], tail])  # its first chunk lost
    await wait_until(lambda: ma.stats["states_incomplete"] == 1, 5)
    assert ma.to_dict() == {i: i for i in range(6)}  # ignored, not joined
