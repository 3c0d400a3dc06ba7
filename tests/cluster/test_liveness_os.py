"""ZeroMQ's heartbeats find a stopped `zmesh join` process (default settings): the
connection is closed and the socket monitor reports it, within `down_after`, and the node
is back once it continues."""

from __future__ import annotations

import asyncio
import signal

import pytest
from joined import start_join

from zmesh import Node, NodeConfig
from zmesh.testing import wait_until

COOKIE = "liveness-cookie"
DEFAULTS = NodeConfig()
# Seen between down_after - tick and down_after after the stop; the slack is for a
# loaded machine (the detection itself is libzmq's timer, not Python's).
BOUND = DEFAULTS.down_after + 0.5


@pytest.mark.timeout(60)
async def test_a_sigstopped_node_is_found_by_zmtp_heartbeats_and_comes_back_on_sigcont() -> None:
    victim = start_join("victim", COOKIE)
    try:
        async with Node("watcher", cookie=COOKIE) as watcher:
            await watcher.connect(victim.address)
            await asyncio.sleep(3 * DEFAULTS.tick)  # idle: only ZeroMQ's PINGs flow
            loop = asyncio.get_running_loop()
            start = loop.time()
            victim.signal(signal.SIGSTOP)
            await wait_until(lambda: watcher.nodes() == [], timeout=BOUND + 2)
            took = loop.time() - start
            assert DEFAULTS.down_after - DEFAULTS.tick - 0.1 <= took <= BOUND
            stats = watcher.stats()
            assert stats.get("connections_lost", 0) == 1  # the socket, not a node heartbeat
            assert stats.get("heartbeat_timeouts", 0) == 0
            victim.signal(signal.SIGCONT)
            await wait_until(lambda: watcher.nodes() == ["victim"], timeout=15)
            info = await watcher.node_info("victim")
            assert info["nodes"] == ["watcher"]
    finally:
        victim.signal(signal.SIGCONT)
        victim.stop()
