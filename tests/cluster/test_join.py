"""Real OS processes started with `zmesh join`: mesh, messages, and failure detection."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
from joined import Joined, start_join

import zmesh
from zmesh import Down, Node

COOKIE = "os-process-cookie"
DETECTION_BOUND = 3.0  # seconds, with default settings (issue 3)


@pytest.fixture
def cluster() -> Iterator[list[Joined]]:
    first = start_join("j1", COOKIE)
    others = [start_join(f"j{i}", COOKIE, "--seed", first.address) for i in (2, 3)]
    nodes = [first, *others]
    yield nodes
    for node in nodes:
        node.stop()


async def wait_for(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return loop.time() - start


@pytest.mark.timeout(90)
async def test_three_joined_nodes_mesh_message_and_detect_sigkill(cluster: list[Joined]) -> None:
    async with Node("observer", cookie=COOKIE) as me_node:
        await me_node.connect(cluster[0].address)
        await wait_for(lambda: me_node.nodes() == ["j1", "j2", "j3"], 15)
        for name in ("j1", "j2", "j3"):
            info = await me_node.node_info(name)
            assert sorted(info["nodes"]) == sorted({"j1", "j2", "j3", "observer"} - {name})
        async with me_node.process() as me:
            echoes = {
                n: await me_node.spawn_remote(n, "zmesh_test_app:echo") for n in ("j1", "j2", "j3")
            }
            for name, pid in echoes.items():
                me_node.send(pid, (me.pid, (name, 1)))
                assert await me.receive(timeout=5) == ("echo", (name, 1))
            ref = me.monitor(echoes["j2"])
            me.trap_exit = True
            me.link(echoes["j2"])
            await asyncio.sleep(0.1)
            cluster[1].signal(signal.SIGKILL)
            took = await wait_for(lambda: "j2" not in me_node.nodes(), DETECTION_BOUND)
            got = {await me.receive(timeout=1), await me.receive(timeout=1)}
            assert got == {
                Down(ref, echoes["j2"], "noconnection"),
                zmesh.Exit(echoes["j2"], "noconnection"),
            }
            assert took < DETECTION_BOUND
            # Seen through the socket monitor (the closed TCP connection), not heartbeats.
            assert me_node.stats().get("connections_lost", 0) == 1
            assert me_node.stats().get("heartbeat_timeouts", 0) == 0
        # The survivors saw it too, and still serve.
        for name in ("j1", "j3"):
            info = await me_node.node_info(name)
            assert "j2" not in info["nodes"]
        async with me_node.process() as me:
            me_node.send(echoes["j3"], (me.pid, "after"))
            assert await me.receive(timeout=5) == ("echo", "after")


@pytest.mark.timeout(90)
async def test_sigstopped_node_is_declared_down_within_the_bound(cluster: list[Joined]) -> None:
    async with Node("observer", cookie=COOKIE) as me_node:
        await me_node.connect(cluster[0].address)
        await wait_for(lambda: me_node.nodes() == ["j1", "j2", "j3"], 15)
        cluster[2].signal(signal.SIGSTOP)
        try:
            took = await wait_for(lambda: "j3" not in me_node.nodes(), DETECTION_BOUND + 1)
            assert took <= DETECTION_BOUND
            await asyncio.sleep(0.5)
            for name in ("j1", "j2"):
                assert "j3" not in (await me_node.node_info(name))["nodes"]
        finally:
            cluster[2].signal(signal.SIGCONT)


@pytest.mark.timeout(60)
async def test_sigterm_leaves_gracefully_and_exits_zero(cluster: list[Joined]) -> None:
    async with Node("observer", cookie=COOKIE) as me_node:
        await me_node.connect(cluster[0].address)
        await wait_for(lambda: me_node.nodes() == ["j1", "j2", "j3"], 15)
        cluster[1].signal(signal.SIGTERM)
        took = await wait_for(lambda: "j2" not in me_node.nodes(), 2)
        assert took < 1.0
        assert cluster[1].proc.wait(10) == 0


@pytest.mark.timeout(60)
def test_join_refuses_an_unknown_module_with_a_clear_error() -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "zmesh", "join", "x", "--listen", "tcp://127.0.0.1:0",
         "--load", "no_such_module_zz"],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, ZMESH_COOKIE="c"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "no_such_module_zz" in result.stderr


@pytest.mark.timeout(60)
async def test_gen_server_calls_across_os_processes_and_noproc_on_sigkill(
    cluster: list[Joined],
) -> None:
    async with Node("caller", cookie=COOKIE) as me_node:
        await me_node.connect(cluster[0].address)
        await wait_for(lambda: me_node.nodes() == ["j1", "j2", "j3"], 15)
        pid = await me_node.start("zmesh_test_app:Counter", 1, on="j3")
        assert await me_node.call(pid, "increment") == 2
        assert await me_node.call(pid, "where") == "j3"
        pending = asyncio.ensure_future(me_node.call(pid, "hold", timeout=10))
        await asyncio.sleep(0.1)
        cluster[2].signal(signal.SIGKILL)
        with pytest.raises(zmesh.NoProc):
            await asyncio.wait_for(pending, DETECTION_BOUND)
