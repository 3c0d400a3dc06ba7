"""Nodes over real ZeroMQ sockets on loopback tcp, inside one process."""

from __future__ import annotations

import asyncio
import logging

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import Down, Exit, Node, NodeConfig
from zmesh.testing import TEST_CONFIG, wait_until

from ..conftest import COOKIE

FAST = NodeConfig(tick=0.1, down_after=0.5)
# dist.pause() freezes a node above its sockets, which keep answering ZeroMQ's PINGs:
# only the node's own heartbeats can find it.
FAST_HEARTBEAT = NodeConfig(tick=0.1, down_after=0.5, liveness="heartbeat")


async def test_connect_returns_the_peer_name_and_lists_nodes(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    assert a.address.startswith("tcp://127.0.0.1:") and not a.address.endswith(":0")
    assert b.nodes() == ["a"]
    await wait_until(lambda: a.nodes() == ["b"])


async def test_mesh_is_transitive() -> None:
    async with (
        Node("n1", cookie=COOKIE) as n1,
        Node("n2", cookie=COOKIE) as n2,
        Node("n3", cookie=COOKIE) as n3,
        Node("n4", cookie=COOKIE) as n4,
    ):
        await n2.connect(n1.address)  # type: ignore[arg-type]
        await n3.connect(n2.address)  # type: ignore[arg-type]
        await n4.connect(n3.address)  # type: ignore[arg-type]
        nodes = [n1, n2, n3, n4]
        await wait_until(lambda: all(len(n.nodes()) == 3 for n in nodes))
        assert n1.nodes() == ["n2", "n3", "n4"]


async def test_remote_send_keeps_order_and_tuples(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    async with b.process() as me:
        sink = a.spawn(app.sink, me.pid, 5000)
        for i in range(5000):
            b.send(sink, i)
        assert await me.receive(timeout=10) == ("received", 5000)
        echo = a.spawn(app.echo)
        b.send(echo, (me.pid, (1, ("nested",), [2])))
        assert await me.receive(timeout=2) == ("echo", (1, ("nested",), [2]))


async def test_remote_monitor_reports_the_exit_reason(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    async with b.process() as me:
        pid = a.spawn(app.idle)
        ref = me.monitor(pid)
        await asyncio.sleep(0.05)
        a.exit(pid, "bye")
        assert await me.receive(timeout=2) == Down(ref, pid, "bye")


async def test_remote_monitor_of_a_dead_pid_fires_noproc(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    pid = a.spawn(app.idle)
    a.exit(pid, "kill")
    async with b.process() as me:
        ref = me.monitor(pid)
        assert await me.receive(timeout=2) == Down(ref, pid, "noproc")


async def test_remote_link_propagates_exit_and_kill(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    async with b.process() as me:
        me.trap_exit = True
        pid = a.spawn(app.idle)
        me.link(pid)
        await asyncio.sleep(0.05)
        a.exit(pid, "kill")
        assert await me.receive(timeout=2) == Exit(pid, "killed")


async def test_remote_exit_signal_kills_an_untrapping_process(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    async with a.process() as watcher:
        pid = a.spawn(app.idle)
        ref = watcher.monitor(pid)
        b.exit(pid, "kill")
        assert await watcher.receive(timeout=2) == Down(ref, pid, "killed")


async def test_links_and_monitors_fire_noconnection_when_a_node_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="zmesh.dist")
    async with Node("stay", cookie=COOKIE, config=FAST) as stay, stay.process() as me:
        me.trap_exit = True
        leaving = Node("leave", cookie=COOKIE, config=FAST)
        await leaving.boot()
        await stay.connect(leaving.address)  # type: ignore[arg-type]
        pid = leaving.spawn(app.idle)
        ref = me.monitor(pid)
        me.link(pid)
        await asyncio.sleep(0.05)
        events: list[tuple[str, str]] = []
        assert stay._dist is not None
        stay._dist.subscribe(lambda event, name: events.append((event, name)))
        await leaving.stop()
        got = {await me.receive(timeout=2), await me.receive(timeout=2)}
        assert got == {Down(ref, pid, "noconnection"), Exit(pid, "noconnection")}
        assert stay.nodes() == []
        assert events == [("down", "leave")]
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stay: ")]
        assert "stay: node leave left" in said  # a goodbye reads as one in the log
        assert not [line for line in said if "down" in line]


async def test_a_leaving_node_closes_its_sockets_once_its_peers_answered_its_goodbye() -> None:
    """Each peer answers BYE with its own, having read everything sent before it; the
    leaver closes only then, so no peer sees the connection drop first (which would
    count as a crash, and refuse the leaver's last frames as from a stranger)."""
    async with Node("p1", cookie=COOKIE) as p1, Node("p2", cookie=COOKIE) as p2:
        await p2.connect(p1.address)  # type: ignore[arg-type]
        leaving = Node("leave", cookie=COOKIE)
        await leaving.boot()
        await leaving.connect(p1.address)  # type: ignore[arg-type]
        await wait_until(lambda: sorted(leaving.nodes()) == ["p1", "p2"], 5)
        await leaving.stop()
        assert leaving.stats().get("byes_unanswered", 0) == 0
        for peer in (p1, p2):
            await wait_until(
                lambda peer=peer: peer.nodes() == [p.name for p in (p1, p2) if p is not peer], 2
            )
            stats = peer.stats()
            assert stats.get("connections_lost", 0) == 0, stats
            assert stats.get("unauthenticated", 0) == 0, stats


async def test_a_goodbye_to_a_paused_peer_goes_unanswered_and_costs_a_bounded_wait() -> None:
    async with Node("quiet", cookie=COOKIE, config=FAST_HEARTBEAT) as quiet:
        leaving = Node("leave", cookie=COOKIE, config=FAST_HEARTBEAT)
        await leaving.boot()
        await leaving.connect(quiet.address)  # type: ignore[arg-type]
        assert quiet._dist is not None
        quiet._dist.pause()
        await asyncio.wait_for(leaving.stop(), 2)
        assert leaving.stats()["byes_unanswered"] == 1
        quiet._dist.resume()
        await wait_until(lambda: quiet.nodes() == [], 2)


async def test_wrong_cookie_is_refused_with_a_clear_error() -> None:
    async with Node("a", cookie="one") as a, Node("b", cookie="two") as b:
        with pytest.raises(zmesh.ConnectError, match="cookie"):
            await b.connect(a.address, timeout=3)  # type: ignore[arg-type]
        assert a.nodes() == [] and b.nodes() == []


async def test_a_second_node_with_a_taken_name_is_refused(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, _b = two_nodes
    async with Node("b", cookie=COOKIE) as impostor:
        with pytest.raises(zmesh.ConnectError, match="name clash"):
            await impostor.connect(a.address, timeout=3)  # type: ignore[arg-type]
    assert a.nodes() == ["b"]


async def test_connecting_to_a_node_of_the_same_name_is_refused() -> None:
    async with Node("same", cookie=COOKIE) as x, Node("same", cookie=COOKIE) as y:
        with pytest.raises(zmesh.ConnectError, match="name"):
            await y.connect(x.address, timeout=3)  # type: ignore[arg-type]


async def test_unreachable_address_times_out_with_connect_error() -> None:
    async with Node("lonely", cookie=COOKIE) as n:
        with pytest.raises(zmesh.ConnectError, match="no answer"):
            await n.connect("tcp://127.0.0.1:9", timeout=0.5)


async def test_spawn_remote_runs_a_loaded_function(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    a._dist.load = frozenset({"zmesh_test_app"})  # type: ignore[union-attr]
    async with b.process() as me:
        pid = await b.spawn_remote("a", app.echo)
        assert pid.node == "a"
        b.send(pid, (me.pid, "hi"))
        assert await me.receive(timeout=2) == ("echo", "hi")
        by_name = await b.spawn_remote("a", "zmesh_test_app:echo")
        assert by_name.node == "a"


async def test_spawn_remote_refuses_modules_not_loaded(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    with pytest.raises(zmesh.RemoteError, match="not loaded"):
        await b.spawn_remote("a", "os:system", "true")
    a._dist.load = frozenset({"zmesh_test_app"})  # type: ignore[union-attr]
    with pytest.raises(zmesh.RemoteError, match="no attribute"):
        await b.spawn_remote("a", "zmesh_test_app:nope")
    with pytest.raises(zmesh.RemoteError, match="not callable"):
        await b.spawn_remote("a", "zmesh_test_app:NOT_CALLABLE")
    with pytest.raises(zmesh.NodeDown):
        await b.spawn_remote("nowhere", app.echo)
    assert b.nodes() == ["a"]


async def test_load_of_an_unknown_module_fails_at_start() -> None:
    with pytest.raises(zmesh.ConfigError, match="no_such_module"):
        async with Node("x", cookie=COOKIE, load=["no_such_module_zz"]):
            pass


async def test_restarted_node_rejoins_and_its_old_pids_are_dead() -> None:
    async with Node("keep", cookie=COOKIE, config=FAST) as keep:
        first = Node("phoenix", cookie=COOKIE, config=FAST)
        await first.boot()
        await keep.connect(first.address)  # type: ignore[arg-type]
        old_pid = first.spawn(app.idle)
        address = first.address
        await first.stop()
        await wait_until(lambda: keep.nodes() == [])
        second = Node("phoenix", cookie=COOKIE, listen=address, config=FAST)
        await second.boot()
        try:
            await keep.connect(address)  # type: ignore[arg-type]
            assert keep.nodes() == ["phoenix"]
            assert second.creation != old_pid.creation
            async with keep.process() as me:
                ref = me.monitor(old_pid)
                assert await me.receive(timeout=2) == Down(ref, old_pid, "noproc")
        finally:
            await second.stop()


async def test_seeds_are_retried_until_they_come_up() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    async with Node("early", cookie=COOKIE, seeds=[address]) as early:
        await asyncio.sleep(0.7)
        assert early.nodes() == []
        async with Node("late", cookie=COOKIE, listen=address):
            await wait_until(lambda: early.nodes() == ["late"], timeout=8)


async def test_paused_peer_is_declared_down_by_heartbeat() -> None:
    async with Node("watch", cookie=COOKIE, config=FAST_HEARTBEAT) as watch:
        frozen = Node("frozen", cookie=COOKIE, config=FAST_HEARTBEAT)
        await frozen.boot()
        try:
            await watch.connect(frozen.address)  # type: ignore[arg-type]
            assert frozen._dist is not None
            frozen._dist.pause()
            start = asyncio.get_running_loop().time()
            await wait_until(lambda: watch.nodes() == [], timeout=3)
            took = asyncio.get_running_loop().time() - start
            assert took <= FAST_HEARTBEAT.down_after + 2 * FAST_HEARTBEAT.tick + 0.5
            assert watch.stats()["heartbeat_timeouts"] == 1
        finally:
            await frozen.stop()


async def test_nodes_talk_over_ipc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a_addr, b_addr = f"ipc://{tmp_path}/a.sock", f"ipc://{tmp_path}/b.sock"
    async with (
        Node("ia", cookie=COOKIE, listen=a_addr) as a,
        Node("ib", cookie=COOKIE, listen=b_addr) as b,
    ):
        assert a.address == a_addr
        assert await b.connect(a_addr) == "ia"
        async with b.process() as me:
            b.send(a.spawn(app.echo), (me.pid, "over ipc"))
            assert await me.receive(timeout=2) == ("echo", "over ipc")


async def test_sending_an_unencodable_message_raises_at_once(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    pid = a.spawn(app.idle)
    with pytest.raises(zmesh.EncodeError):
        b.send(pid, object())
    with pytest.raises(zmesh.EncodeError):
        b.send(pid, "x" * (9 * 1024 * 1024))
    assert a.is_alive(pid) and b.nodes() == ["a"]


async def test_node_exit_closes_every_socket_and_leaves_no_task() -> None:
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    await asyncio.sleep(0.05)
    tasks_before, fds_before = set(asyncio.all_tasks()), open_fds()
    async with Node("x1", cookie=COOKIE) as x1, Node("x2", cookie=COOKIE) as x2:
        await x2.connect(x1.address)  # type: ignore[arg-type]
        x1.spawn(app.idle)
        assert open_fds() > fds_before  # sockets, monitors, the contexts' threads' pipes
    await asyncio.sleep(0.05)
    assert set(asyncio.all_tasks()) - tasks_before == set()
    assert open_fds() == fds_before


async def test_peer_stats_count_each_peers_traffic(two_nodes) -> None:  # type: ignore[no-untyped-def]
    a, b = two_nodes
    async with b.process() as me:
        sink = a.spawn(app.sink, me.pid, 100)
        for i in range(100):
            b.send(sink, i)
        assert await me.receive(timeout=5) == ("received", 100)
    sent, received = b.peer_stats()["a"], a.peer_stats()["b"]
    assert set(sent) == {
        "messages_in", "messages_out", "bytes_in", "bytes_out",
        "frames_in", "frames_out", "envelopes_in",
    }  # fmt: skip
    assert sent["messages_out"] == received["messages_in"] == 100
    assert received["messages_out"] == sent["messages_in"] == 1  # the sink's answer
    # Envelopes share frames (batching); a peer reads no more than was sent to it.
    assert 1 <= received["frames_in"] <= received["envelopes_in"]
    assert received["envelopes_in"] >= 100
    assert received["frames_in"] <= sent["frames_out"]
    assert 100 * 10 <= received["bytes_in"] <= sent["bytes_out"]
    assert sent["frames_in"] >= 1 and sent["bytes_in"] <= received["bytes_out"]


async def test_two_nodes_that_gave_up_on_each_other_during_a_pause_reconnect_without_seeds() -> (
    None
):
    """Neither names the other as a seed (one called `connect`): after a pause longer
    than down_after both declared the other down, and they still find each other."""
    async with (
        zmesh.Node("a", cookie=COOKIE, config=TEST_CONFIG) as a,
        zmesh.Node("b", cookie=COOKIE, config=TEST_CONFIG) as b,
    ):
        await b.connect(a.address)  # type: ignore[arg-type]
        assert b._dist is not None
        b._dist.pause()
        await wait_until(lambda: a.nodes() == [], 5)
        await asyncio.sleep(TEST_CONFIG.down_after)  # b's view of a is stale by now
        b._dist.resume()
        await wait_until(lambda: a.nodes() == ["b"] and b.nodes() == ["a"], 10)
        async with a.process() as me:
            a.send(b.spawn(app.echo), (me.pid, "back"))
            assert await me.receive(timeout=5) == ("echo", "back")
