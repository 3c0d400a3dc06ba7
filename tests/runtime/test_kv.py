"""The partitioned store over real tcp nodes (zmesh.testing.Cluster): placement on n
primaries, siblings and resolvers, read after write with a replica lost, hinted and
ownership handoff, coverage, refusals."""

from __future__ import annotations

import pytest

from zmesh import ConfigError, EncodeError, RemoteError, Unavailable
from zmesh.runtime.kv import KV, Conflict
from zmesh.testing import Cluster, wait_until


async def open_all(c: Cluster, name: str = "s", **options: object) -> dict[str, KV]:
    stores = {node.name: await node.kv_open(name, **options) for node in c}  # type: ignore[arg-type]
    everyone = sorted(c.names)
    await wait_until(lambda: all(s.members() == everyone for s in stores.values()), 5)
    return stores


def holders(stores: dict[str, KV], key: object) -> set[str]:
    return {name for name, s in stores.items() if s.vnodes.held(key).values()}  # type: ignore[arg-type]


@pytest.mark.zmesh_nodes(5)
async def test_a_key_lives_on_its_n_primaries_and_reads_from_anywhere(
    zmesh_cluster: Cluster,
) -> None:
    stores = await open_all(zmesh_cluster)
    s1 = stores["n1"]
    for i in range(30):
        await stores[f"n{i % 5 + 1}"].put(f"k{i}", {"i": i, "t": (i,)}, w=2)
    for i in range(30):
        primaries = s1.key_to_nodes(f"k{i}")
        assert len(primaries) == 3
        await wait_until(lambda i=i, p=primaries: holders(stores, f"k{i}") == set(p), 5)  # type: ignore[misc]
        assert await stores[f"n{(i + 2) % 5 + 1}"].get(f"k{i}", r=2) == {"i": i, "t": (i,)}
    assert await s1.get("absent", "dflt") == "dflt"
    await stores["n3"].delete("k0")
    assert await s1.get("k0") is None
    assert sorted(await stores["n4"].keys()) == sorted(f"k{i}" for i in range(1, 30))
    with pytest.raises(ConfigError):
        await s1.put("k", 1, w=4)
    with pytest.raises(ConfigError):
        await zmesh_cluster["n1"].kv_open("s", n=2)
    with pytest.raises(ConfigError, match="kv_open"):
        _ = zmesh_cluster["n2"].kv


@pytest.mark.zmesh_nodes(3)
async def test_concurrent_writes_are_siblings_until_a_write_that_read_them(
    zmesh_cluster: Cluster,
) -> None:
    stores = await open_all(zmesh_cluster)
    s = stores["n1"]
    await s.put("cart", ["milk"])
    seen = await s.fetch("cart")
    await s.put("cart", ["milk", "eggs"], context=seen.context)  # two writers that both
    await stores["n2"].put("cart", ["milk", "tea"], context=seen.context)  # read "milk"
    conflict = await stores["n3"].get("cart")
    assert isinstance(conflict, Conflict)
    assert sorted(conflict.values) == [["milk", "eggs"], ["milk", "tea"]]
    await s.put("cart", ["milk", "eggs", "tea"], context=conflict.context)
    assert await stores["n2"].get("cart") == ["milk", "eggs", "tea"]
    resolved = await zmesh_cluster["n1"].kv_open("r", resolve=max)
    await open_all(zmesh_cluster, "r", resolve=max)
    await resolved.put("x", 1)
    ctx = (await resolved.fetch("x")).context
    await resolved.put("x", 5, context=ctx)
    await resolved.put("x", 3, context=ctx)
    assert await resolved.get("x") == 5


@pytest.mark.zmesh_nodes(5)
async def test_a_read_after_an_acknowledged_write_survives_a_lost_replica_and_hints_return(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    key = next(f"k{i}" for i in range(100) if "n1" not in stores["n1"].key_to_nodes(f"k{i}"))
    primaries = stores["n1"].key_to_nodes(key)
    await stores["n1"].put(key, "v1", w=2)
    victim = primaries[0]
    await c.kill(victim)
    await c.settle()
    assert await stores["n1"].get(key, r=2) == "v1"
    await stores["n1"].put(key, "v2", w=2)  # the victim's share goes to a fallback
    assert sum(s.stats()["hints"] for n, s in stores.items() if n != victim) == 1
    for name in primaries[1:]:
        assert await stores[name].get(key, r=2) == "v2"
    node = await c.restart(victim)
    await c.settle()
    back = await node.kv_open("s")
    await wait_until(lambda: back.vnodes.held(key).values() == ["v2"], 5, what="hint delivered")
    await wait_until(lambda: sum(s.stats()["hints"] for s in stores.values()) == 0, 5)


@pytest.mark.zmesh_nodes(4)
async def test_ownership_moves_when_a_member_joins_and_when_one_leaves(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    first = {name: await c[name].kv_open("s") for name in ("n1", "n2", "n3")}
    await wait_until(lambda: all(len(s.members()) == 3 for s in first.values()), 5)
    keys = [f"key{i}" for i in range(200)]
    for k in keys:
        await first["n1"].put(k, k.upper())
    stores = {**first, "n4": await c["n4"].kv_open("s")}
    await wait_until(lambda: all(len(s.members()) == 4 for s in stores.values()), 5)

    def placed() -> bool:
        return all(holders(stores, k) == set(stores["n1"].key_to_nodes(k)) for k in keys)

    await wait_until(placed, 10, what="every key on exactly its primaries after the join")
    await stores["n2"].close()  # a graceful leave hands its partitions over
    del stores["n2"]
    await wait_until(lambda: all(len(s.members()) == 3 for s in stores.values()), 5)
    await wait_until(placed, 10, what="every key on exactly its primaries after the leave")
    for k in keys:
        assert await stores["n4"].get(k) == k.upper()


@pytest.mark.zmesh_nodes(3)
async def test_too_few_replicas_is_unavailable_and_bad_messages_are_refused(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    with pytest.raises(Unavailable):
        await stores["n1"].put("k", 1, w=2)
    with pytest.raises(Unavailable):
        await stores["n1"].get("k", r=2)
    await c.heal()
    await c.settle()
    dist = c["n1"]._dist
    assert dist is not None
    before = c["n2"].stats().get("bad_data", 0)
    bad = [
        ("kv.batch", ["s", "not a list of items"]),
        ("kv.batch", ["s", [["w", 1, "not", "enough"]]]),
        ("kv.batch", ["s", [["w", 2, 1.5, [], None]]]),  # a float key
        ("kv.batch", ["s", [["w", 3, "k", ["w", 1, [], 1, "not a bool"], None]]]),
        ("kv.batch", ["s", [["w", "no id", "k", ["w", 1, [], 1, False], None]]]),
        ("kv.batch", ["s", [["r", 4, "k", 7]]]),  # a hint that is not a node name
        ("kv.batch", ["s", [["a", 5]]]),
        ("kv.batch", ["s", [["k", 0, "not a list of ops"]]]),
        ("kv.batch", ["s", [["k", 0, [1, "not an op"]]]]),
        ("kv.batch", ["s", [["p", 6, "k", 1, "x", None, 2, 1.0]]]),  # deleted not a bool
        ("kv.batch", ["s", [["z", 7, "k"]]]),  # an unknown kind
        ("kv.batch", ["s", [["s", 0, "not a list of digests"]]]),
        ("kv.batch", ["s", [["m", 0, 3, [["k", "not siblings"]], False]]]),
        ("kv.batch", ["s", [["x", 0, "k"]]]),  # a reap without its siblings
        ("kv.repair", ["s", "k", "not siblings", None]),
        ("kv.repair", "junk"),
        ("kv.leave", [3]),
    ]
    for op, body in bad:
        assert dist.cast("n2", op, body)
    await wait_until(lambda: c["n2"].stats().get("bad_data", 0) == before + len(bad), 5)
    with pytest.raises(RemoteError):
        await dist.request("n2", "kv.hello", ["s", "n", "p"], 5)
    assert c["n2"].stats()["bad_requests"] >= 1
    await stores["n1"].put("fine", 1)
    assert await stores["n2"].get("fine") == 1


@pytest.mark.zmesh_nodes(5)
async def test_a_member_gone_for_good_is_forgotten_and_its_partitions_refilled(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    stores = await open_all(c)
    keys = [f"f{i}" for i in range(120)]
    for k in keys:
        await stores["n1"].put(k, k, w=2)
    await c.kill("n5")
    await c.settle()
    del stores["n5"]
    await stores["n1"].put("during", 1, w=2)  # maybe a hint for n5
    with pytest.raises(ConfigError):
        stores["n1"].forget("n2")  # connected: it must close the store itself
    stores["n1"].forget("n5")
    await wait_until(lambda: all("n5" not in s.members() for s in stores.values()), 5)

    def placed() -> bool:
        return all(
            holders(stores, k) == set(stores["n1"].key_to_nodes(k)) for k in [*keys, "during"]
        )

    await wait_until(placed, 10, what="every key on its 3 primaries among the 4 left")
    assert sum(s.stats()["hints"] for s in stores.values()) == 0
    for k in keys:
        assert await stores["n3"].get(k) == k


@pytest.mark.zmesh_nodes(3)
async def test_a_value_the_codec_cannot_carry_is_refused_before_any_replica_has_it(
    zmesh_cluster: Cluster,
) -> None:
    stores = await open_all(zmesh_cluster)
    s1 = stores["n1"]
    for bad in (2**64, -(2**63) - 1, "\ud800", object(), ["\ud800"]):
        with pytest.raises(EncodeError):
            await s1.put("k", bad)
    assert not any(s.vnodes.held("k").items() for s in stores.values())
    for fine in (2**64 - 1, -(2**63), "é" * 70000, 1.5, True, None, b"x"):
        await s1.put("k", fine, w=3)
        assert await stores["n3"].get("k", r=3) == fine
