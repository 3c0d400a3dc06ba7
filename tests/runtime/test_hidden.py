"""Hidden nodes (Erlang's `-hidden`): connected to the cluster, out of its membership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import Down, Node, NodeConfig
from zmesh.core.protocol import Kind
from zmesh.core.registry_state import leader_for
from zmesh.testing import wait_until

from ..conftest import COOKIE

FAST = NodeConfig(tick=0.1, down_after=0.5)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two visible nodes, v1 and v2, meshed."""
    async with (
        Node("v1", cookie=COOKIE, config=FAST) as v1,
        Node("v2", cookie=COOKIE, config=FAST) as v2,
    ):
        await v2.connect(v1.address)  # type: ignore[arg-type]
        await wait_until(lambda: v1.nodes() == ["v2"])
        yield v1, v2


def hidden_node(name: str = "h") -> Node:
    return Node(name, cookie=COOKIE, config=FAST, hidden=True)


async def join_hidden(stack: AsyncExitStack, v1: Node, v2: Node) -> Node:
    """A hidden node seeded at v1, once it is connected to both."""
    h = await stack.enter_async_context(hidden_node())
    await h.connect(v1.address)  # type: ignore[arg-type]
    await wait_until(lambda: h.nodes() == ["v1", "v2"], what="h connects to v2 too")
    await wait_until(lambda: "h" in v2.nodes(include_hidden=True))
    return h


async def test_a_hidden_node_is_connected_but_not_listed(pair: tuple[Node, Node]) -> None:
    v1, v2 = pair
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        assert h.hidden and not v1.hidden
        assert v1.nodes() == ["v2"] and v2.nodes() == ["v1"]
        assert v1.nodes(include_hidden=True) == ["h", "v2"]
        assert v2.nodes(include_hidden=True) == ["h", "v1"]
        assert v1.info()["nodes"] == ["v2"] and v1.info()["hidden"] is False
        assert h.info()["nodes"] == ["v1", "v2"] and h.info()["hidden"] is True
        assert v1.stats()["peers"] == 1
        assert sorted(v1.peer_stats()) == ["h", "v2"]  # traffic is counted for every peer


async def test_a_hidden_node_is_on_no_ring_and_sees_only_visible_nodes_on_its_own(
    pair: tuple[Node, Node],
) -> None:
    v1, v2 = pair
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        assert v1.ring.nodes == v2.ring.nodes == h.ring.nodes == ["v1", "v2"]
        keys = [f"user:{i}" for i in range(200)]
        assert [h.ring.key_to_node(k) for k in keys] == [v1.ring.key_to_node(k) for k in keys]


async def test_a_lone_hidden_node_owns_no_keys_and_cannot_register() -> None:
    async with hidden_node() as h:
        assert h.ring.nodes == [] and h.nodes() == []
        with pytest.raises(zmesh.EmptyRing):
            h.ring.key_to_node("user:1")
        with pytest.raises(zmesh.NodeDown, match="hidden"):
            await h.register("mine", h.spawn(app.idle))


async def test_rings_do_not_change_while_a_hidden_node_comes_and_goes(
    pair: tuple[Node, Node],
) -> None:
    v1, v2 = pair
    rings = {n.name: n.ring for n in pair}
    changes: list[tuple[str, list[str]]] = []
    v1.watch_ring(lambda ring: changes.append(("v1", ring.nodes)))
    v2.watch_ring(lambda ring: changes.append(("v2", ring.nodes)))
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        await h.call(await v2.start(app.Counter, 0), "increment")
    await wait_until(
        lambda: v1.nodes(include_hidden=True) == ["v2"] and v2.nodes(include_hidden=True) == ["v1"]
    )
    assert changes == []
    assert all(n.ring is rings[n.name] for n in pair)
    # The watchers are live: a visible node does move the rings.
    async with Node("v3", cookie=COOKIE, config=FAST) as v3:
        await v3.connect(v1.address)  # type: ignore[arg-type]
        await wait_until(lambda: len(changes) == 2)
        assert sorted(changes) == [("v1", ["v1", "v2", "v3"]), ("v2", ["v1", "v2", "v3"])]


async def test_node_listeners_hear_of_hidden_peers_only_if_they_ask(
    pair: tuple[Node, Node],
) -> None:
    v1, v2 = pair
    visible: list[tuple[str, str]] = []
    every: list[tuple[str, str]] = []
    v1.subscribe_nodes(lambda event, name: visible.append((event, name)))
    v1.subscribe_nodes(lambda event, name: every.append((event, name)), include_hidden=True)
    async with AsyncExitStack() as stack:
        await join_hidden(stack, v1, v2)
    await wait_until(lambda: v1.nodes(include_hidden=True) == ["v2"])
    assert visible == []
    assert every == [("up", "h"), ("down", "h")]


async def test_a_hidden_node_never_grants_names(pair: tuple[Node, Node]) -> None:
    v1, v2 = pair
    names = [f"svc{i}" for i in range(30)]
    # Were h a candidate, it would lead about a third of these names.
    assert sum(leader_for(n, ["h", "v1", "v2"]) == "h" for n in names) >= 5
    granted: dict[str, list[str]] = {"h": [], "v1": [], "v2": []}
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        for node in (h, v1, v2):
            spy_on_reserve(node, granted[node.name])
        for i, name in enumerate(names):
            owner = (v1, v2)[i % 2]
            assert await owner.register(name, owner.spawn(app.idle))
        assert granted["h"] == []
        # h's own registrations are granted by the visible nodes, never by h itself.
        own = [f"h{i}" for i in range(10)]
        for name in own:
            assert await h.register(name, h.spawn(app.idle))
        assert all(name in granted[leader_for(name, ["v1", "v2"])] for name in own)
        assert granted["h"] == []


def spy_on_reserve(node: Node, log: list[str]) -> None:
    """Record the names `node` is asked to grant as a registry leader."""
    assert node._dist is not None
    handlers = node._dist._requests._handlers
    original = handlers["reg.reserve"]

    def spy(sender: str, body: Any) -> Any:
        log.append(body[0])
        return original(sender, body)

    handlers["reg.reserve"] = spy


async def test_a_hidden_node_calls_sends_monitors_and_uses_names(pair: tuple[Node, Node]) -> None:
    v1, v2 = pair
    counter = await v1.start(app.Counter, 0, name="counter")
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        await wait_until(lambda: h.whereis("counter") == counter, what="h got v1's table")
        assert await h.call("counter", "increment") == 1
        async with h.process() as me:
            h.send(v2.spawn(app.echo), (me.pid, "hi"))
            assert await me.receive(timeout=2) == ("echo", "hi")
            target = v2.spawn(app.idle)
            ref = me.monitor(target)
            await h.node_info("v2")  # the request takes the queued monitor along
            v2.exit(target, "bye")
            assert await me.receive(timeout=2) == Down(ref, target, "bye")
        assert (await h.node_info("v2"))["name"] == "v2"
        mine = h.spawn(app.idle)
        assert await h.register("from-hidden", mine)
        await wait_until(lambda: v1.whereis("from-hidden") == v2.whereis("from-hidden") == mine)
        async with v1.process() as watcher:
            ref = watcher.monitor(mine)
            await stack.aclose()  # h leaves
            assert await watcher.receive(timeout=2) == Down(ref, mine, "noconnection")
    await wait_until(
        lambda: v1.whereis("from-hidden") is None and v2.whereis("from-hidden") is None
    )
    assert v1.whereis("counter") == counter


async def test_a_hidden_node_is_not_gossiped_but_hears_of_new_nodes(
    pair: tuple[Node, Node],
) -> None:
    v1, v2 = pair
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        v3 = Node("v3", cookie=COOKIE, config=FAST)
        told: list[list[str]] = []
        await v3.boot()
        stack.push_async_callback(v3.stop)
        spy_on_peers(v3, told)
        await v3.connect(v1.address)  # type: ignore[arg-type]
        await wait_until(lambda: v3.nodes() == ["v1", "v2"])
        for name in ("v1", "v2"):
            await v3.node_info(name)  # replies follow the PEERS each sent us
        assert sorted(told) == [["v1"], ["v2"]]  # v1 named v2, v2 named v1: nobody named h
        # h's seed told h about v3, so h connects to it (and stays hidden there).
        await wait_until(lambda: h.nodes() == ["v1", "v2", "v3"])
        assert v3.nodes() == ["v1", "v2"] and v3.nodes(include_hidden=True) == ["h", "v1", "v2"]
        assert v3.ring.nodes == ["v1", "v2", "v3"] == h.ring.nodes


def spy_on_peers(node: Node, log: list[list[str]]) -> None:
    """Record the names in every PEERS envelope `node` receives."""
    assert node._dist is not None
    dispatch = node._dist._dispatch
    original = dispatch[Kind.PEERS]

    def spy(peer: Any, env: list[Any]) -> None:
        log.append([name for name, _address in env[1]])
        original(peer, env)

    dispatch[Kind.PEERS] = spy


async def test_a_hidden_node_gossips_nothing() -> None:
    async with (
        Node("left", cookie=COOKIE, config=FAST) as left,
        Node("right", cookie=COOKIE, config=FAST) as right,
        hidden_node() as h,
    ):
        told: list[list[str]] = []
        spy_on_peers(left, told)
        spy_on_peers(right, told)
        await h.connect(left.address)  # type: ignore[arg-type]
        await h.connect(right.address)  # type: ignore[arg-type]
        assert h.nodes() == ["left", "right"]
        await h.node_info("left")  # the replies follow anything h sent before
        await h.node_info("right")
        assert told == []  # h bridged nothing: left and right stay two clusters
        assert left.nodes() == [] and right.nodes() == []
        assert left.ring.nodes == ["left"]


async def test_a_hidden_nodes_group_members_are_seen_and_go_with_it(
    pair: tuple[Node, Node],
) -> None:
    v1, v2 = pair
    async with AsyncExitStack() as stack:
        h = await join_hidden(stack, v1, v2)
        member = h.spawn(app.idle)
        h.pg.join("workers", member)
        await wait_until(lambda: v1.pg.members("workers") == [member] == v2.pg.members("workers"))
    await wait_until(lambda: v1.pg.members("workers") == [] == v2.pg.members("workers"))
