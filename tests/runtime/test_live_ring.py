"""The live ring follows cluster membership; every node computes the same placement."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import zmesh
from zmesh import HashRing, Node, NodeConfig
from zmesh.testing import wait_until

from ..conftest import COOKIE

FAST = NodeConfig(tick=0.1, down_after=0.5)
KEYS = [f"user:{i}" for i in range(500)]


async def test_a_lone_node_owns_every_key(local_node: Node) -> None:
    assert local_node.ring.nodes == ["local"]
    assert {local_node.ring.key_to_node(k) for k in KEYS} == {"local"}


async def test_ring_follows_membership_and_placement_agrees() -> None:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node(f"m{i}", cookie=COOKIE, config=FAST))
            for i in range(3)
        ]
        changes: list[list[str]] = []
        nodes[0].watch_ring(lambda ring: changes.append(ring.nodes))
        for n in nodes[1:]:
            await n.connect(nodes[0].address)  # type: ignore[arg-type]
        await wait_until(lambda: all(n.ring.nodes == ["m0", "m1", "m2"] for n in nodes))
        placements = [[n.ring.key_to_node(k) for k in KEYS] for n in nodes]
        assert placements[0] == placements[1] == placements[2]
        assert placements[0] == [HashRing(["m0", "m1", "m2"]).key_to_node(k) for k in KEYS]
        assert changes == [["m0", "m1"], ["m0", "m1", "m2"]]
        before = nodes[0].ring
        await nodes[2].stop()
        await wait_until(lambda: nodes[0].ring.nodes == ["m0", "m1"])
        assert before.nodes == ["m0", "m1", "m2"]  # an old ring is never mutated
        moved = [k for k in KEYS if before.key_to_node(k) != nodes[0].ring.key_to_node(k)]
        assert all(before.key_to_node(k) == "m2" for k in moved)


async def test_ring_changes_is_an_async_iterator() -> None:
    async with Node("it", cookie=COOKIE, config=FAST) as a:
        seen: list[list[str]] = []

        async def follow() -> None:
            async for ring in a.ring_changes():
                seen.append(ring.nodes)
                if len(seen) == 2:
                    return

        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        async with Node("other", cookie=COOKIE, config=FAST) as b:
            await b.connect(a.address)  # type: ignore[arg-type]
            await wait_until(lambda: a.ring.nodes == ["it", "other"])
        await asyncio.wait_for(follower, 3)
        assert seen == [["it", "other"], ["it"]]
    assert isinstance(zmesh.HashRing([]), HashRing)
