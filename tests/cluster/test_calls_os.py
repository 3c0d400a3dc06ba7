"""A caller's node killed mid-call (a real `zmesh join` process, SIGKILL): the server's
node drops the implicit monitors of its calls."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from joined import start_join

import zmesh
from zmesh import GenServer, Node
from zmesh.testing import wait_until

COOKIE = "calls-os-cookie"


class Holder(GenServer):
    async def init(self) -> None:
        self.held: list[zmesh.Caller] = []

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "hold":
            self.held.append(caller)
            return zmesh.NOREPLY
        for waiting in self.held:
            self.reply(waiting, "released")
        count, self.held = len(self.held), []
        return count


@pytest.mark.timeout(60)
async def test_a_killed_callers_node_leaves_no_monitor_on_the_servers_node() -> None:
    joined = start_join("caller", COOKIE, "--load", "zmesh_call_app")
    try:
        async with Node("server", cookie=COOKIE) as node:
            await node.connect(joined.address)
            server = await node.start(Holder)
            proc = node._procs[server.id]
            for _ in range(3):
                await node.spawn_remote("caller", "zmesh_call_app:call_and_report", server, "hold")
            await wait_until(lambda: len(proc.watchers or ()) == 3, 10)
            assert node._dist is not None
            assert len(node._dist._signals._cross["caller"].calls) == 3
            joined.signal(signal.SIGKILL)
            await wait_until(lambda: "caller" not in node.nodes(), 5)
            assert not proc.watchers and "caller" not in node._dist._signals._cross
            assert await node.call(server, "release") == 3  # the replies are dropped
    finally:
        joined.stop()
