"""Liveness with ZeroMQ's heartbeats (the default): an idle link carries no node
heartbeats, a stuck event loop is still found (after `stall_after`), and the node's own
heartbeats are one option away. Real tcp on loopback."""

from __future__ import annotations

import asyncio

import pytest

from zmesh import ConfigError, Node, NodeConfig
from zmesh.testing import wait_until

from ..conftest import COOKIE

#: The node's stall-detector heartbeat on an idle link: every 30 s (stall_after / 2).
ZMTP = NodeConfig(tick=0.1, down_after=0.5, stall_after=60.0)
HEARTBEAT = NodeConfig(tick=0.1, down_after=0.5, liveness="heartbeat")


async def frames_while_idle(config: NodeConfig, seconds: float) -> int:
    """Frames `a` received from `b` over `seconds` of two connected, idle nodes."""
    async with (
        Node("a", cookie=COOKIE, config=config) as a,
        Node("b", cookie=COOKIE, config=config) as b,
    ):
        await b.connect(a.address)  # type: ignore[arg-type]
        await wait_until(lambda: a.nodes() == ["b"], 5)
        await asyncio.sleep(0.3)  # the handshake's and the first sync's frames pass
        before = a.peer_stats()["b"]["frames_in"]
        await asyncio.sleep(seconds)
        assert a.nodes() == ["b"] and b.nodes() == ["a"]
        return a.peer_stats()["b"]["frames_in"] - before


def test_liveness_is_zmtp_by_default_and_refuses_unknown_modes() -> None:
    assert NodeConfig().liveness == "zmtp"
    with pytest.raises(ConfigError, match="liveness"):
        NodeConfig(liveness="ping")


async def test_an_idle_zmtp_link_carries_no_node_heartbeats_and_stays_up() -> None:
    # Ten ticks: ZeroMQ PINGs keep the link alive. The node's own heartbeat (it finds a
    # stuck event loop) goes out on an idle link once per `stall_after / 2`, when the
    # loop's clock crosses a multiple of it (7.5 s by default, 30 s here): one at most
    # lands in the window, where a heartbeat per tick would be ten.
    assert await frames_while_idle(ZMTP, 10 * ZMTP.tick) <= 1


async def test_with_liveness_heartbeat_an_idle_link_carries_one_each_tick() -> None:
    # Ten ticks, each heartbeat its own frame; half of them, to allow for a loaded machine.
    assert await frames_while_idle(HEARTBEAT, 10 * HEARTBEAT.tick) >= 5


async def test_a_peer_whose_loop_is_stuck_is_down_after_stall_after_not_down_after() -> None:
    """`dist.pause()` stops a node above its sockets: ZeroMQ still answers PINGs, so only
    the node heartbeats (one per stall_after / 2 on an idle link) can find it."""
    config = NodeConfig(tick=0.1, down_after=0.5, stall_after=2.0)
    async with Node("watch", cookie=COOKIE, config=config) as watch:
        stuck = Node("stuck", cookie=COOKIE, config=config)
        await stuck.boot()
        try:
            await watch.connect(stuck.address)  # type: ignore[arg-type]
            assert stuck._dist is not None
            stuck._dist.pause()
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.sleep(2 * config.down_after)
            assert watch.nodes() == ["stuck"]  # its sockets answer: not down yet
            await wait_until(lambda: watch.nodes() == [], timeout=5)
            assert loop.time() - start <= config.stall_after + 2 * config.tick + 1.0
            assert watch.stats()["heartbeat_timeouts"] == 1
            assert watch.stats().get("connections_lost", 0) == 0
        finally:
            await stuck.stop()
