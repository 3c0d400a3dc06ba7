"""Local process semantics: mailboxes, selective receive, links, monitors, exit signals."""

from __future__ import annotations

import asyncio

import pytest

import zmesh
from zmesh import Down, Exit, Node, Process


async def idle(proc: Process) -> None:
    await proc.receive()


async def crash_on_message(proc: Process) -> None:
    await proc.receive()
    raise ValueError("boom")


async def forward_to(proc: Process, target: zmesh.Pid) -> None:
    while True:
        proc.send(target, await proc.receive())


async def test_spawned_process_receives_in_send_order(local_node: Node) -> None:
    async with local_node.process() as me:
        relay = local_node.spawn(forward_to, me.pid)
        for i in range(100):
            local_node.send(relay, i)
        assert [await me.receive(timeout=1) for _ in range(100)] == list(range(100))


async def test_receive_returns_the_bare_message_and_tuples_stay_tuples(local_node: Node) -> None:
    async with local_node.process() as me:
        local_node.send(me.pid, ("hello", 1))
        assert await me.receive(timeout=1) == ("hello", 1)


async def test_selective_receive_keeps_the_other_messages_in_order(local_node: Node) -> None:
    async with local_node.process() as me:
        for m in ["a", 1, "b", 2, "c"]:
            local_node.send(me.pid, m)
        assert await me.receive(match=lambda m: isinstance(m, int) and m > 1, timeout=1) == 2
        assert await me.receive(match=int, timeout=1) == 1
        assert [await me.receive(timeout=1) for _ in range(3)] == ["a", "b", "c"]


async def test_selective_receive_waits_for_a_later_matching_message(local_node: Node) -> None:
    async with local_node.process() as me:
        local_node.send(me.pid, "skip")
        waiter = asyncio.ensure_future(me.receive(match=lambda m: m == "want", timeout=2))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        local_node.send(me.pid, "want")
        assert await waiter == "want"
        assert await me.receive(timeout=0) == "skip"


async def test_receive_timeout_is_a_timeout_error(local_node: Node) -> None:
    async with local_node.process() as me:
        with pytest.raises(zmesh.ReceiveTimeout):
            await me.receive(timeout=0.01)
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0)
        local_node.send(me.pid, "late")
        assert await me.receive(timeout=0) == "late"


async def test_monitor_on_dead_pid_fires_noproc(local_node: Node) -> None:
    async with local_node.process() as me:
        pid = local_node.spawn(idle)
        local_node.exit(pid, "kill")
        ref = me.monitor(pid)
        assert await me.receive(timeout=1) == Down(ref, pid, "noproc")


async def test_monitor_reports_normal_exit(local_node: Node) -> None:
    async with local_node.process() as me:
        pid = local_node.spawn(idle)
        ref = me.monitor(pid)
        local_node.send(pid, "go")
        assert await me.receive(timeout=1) == Down(ref, pid, "normal")
        assert not local_node.is_alive(pid)


async def test_crash_reason_names_the_exception(local_node: Node) -> None:
    async with local_node.process() as me:
        pid = local_node.spawn(crash_on_message)
        ref = me.monitor(pid)
        local_node.send(pid, "go")
        down = await me.receive(timeout=1)
        assert down == Down(ref, pid, "ValueError: boom")


async def test_demonitor_stops_the_down_message(local_node: Node) -> None:
    async with local_node.process() as me:
        pid = local_node.spawn(idle)
        ref = me.monitor(pid)
        me.demonitor(ref)
        local_node.send(pid, "go")
        await asyncio.sleep(0.01)
        with pytest.raises(zmesh.ReceiveTimeout):
            await me.receive(timeout=0)


async def test_linked_crash_takes_the_partner_down(local_node: Node) -> None:
    async with local_node.process() as me:
        a = local_node.spawn(idle)
        b = local_node.spawn(crash_on_message)
        ref = me.monitor(a)
        proc_a = local_node._local(a)
        assert proc_a is not None
        proc_a.link(b)
        local_node.send(b, "go")
        assert await me.receive(timeout=1) == Down(ref, a, "ValueError: boom")


async def test_normal_exit_does_not_take_linked_partners_down(local_node: Node) -> None:
    async with local_node.process() as me:
        worker = local_node.spawn(idle)
        me.link(worker)
        local_node.send(worker, "go")  # exits normal
        await asyncio.sleep(0.01)
        local_node.send(me.pid, "still here")
        assert await me.receive(timeout=1) == "still here"


async def test_trap_exit_turns_exit_signals_into_messages(local_node: Node) -> None:
    async with local_node.process() as me:
        me.trap_exit = True
        worker = local_node.spawn(crash_on_message)
        me.link(worker)
        local_node.send(worker, "go")
        assert await me.receive(timeout=1) == Exit(worker, "ValueError: boom")
        normal = local_node.spawn(idle)
        me.link(normal)
        local_node.send(normal, "go")
        assert await me.receive(timeout=1) == Exit(normal, "normal")


async def test_kill_cannot_be_trapped_and_is_seen_as_killed(local_node: Node) -> None:
    async def trapper(proc: Process) -> None:
        proc.trap_exit = True
        while True:
            await proc.receive()

    async with local_node.process() as me:
        pid = local_node.spawn(trapper)
        await asyncio.sleep(0)
        ref = me.monitor(pid)
        local_node.exit(pid, "kill")
        assert await me.receive(timeout=1) == Down(ref, pid, "killed")


async def test_exit_with_a_reason_is_trapped_or_kills(local_node: Node) -> None:
    async def trapper(proc: Process, parent: zmesh.Pid) -> None:
        proc.trap_exit = True
        proc.send(parent, await proc.receive())

    async with local_node.process() as me:
        trapping = local_node.spawn(trapper, me.pid)
        await asyncio.sleep(0)
        local_node.exit(trapping, "shutdown")
        assert await me.receive(timeout=1) == Exit(local_node.system_pid, "shutdown")
        plain = local_node.spawn(idle)
        ref = me.monitor(plain)
        local_node.exit(plain, "normal")  # ignored: not trapping
        local_node.exit(plain, "bye")
        assert await me.receive(timeout=1) == Down(ref, plain, "bye")


async def test_linked_killed_partner_exits_with_killed(local_node: Node) -> None:
    async with local_node.process() as me:
        me.trap_exit = True
        pid = local_node.spawn(idle)
        me.link(pid)
        local_node.exit(pid, "kill")
        assert await me.receive(timeout=1) == Exit(pid, "killed")


async def test_link_to_a_dead_pid_delivers_noproc(local_node: Node) -> None:
    async with local_node.process() as me:
        me.trap_exit = True
        pid = local_node.spawn(idle)
        local_node.exit(pid, "kill")
        me.link(pid)
        assert await me.receive(timeout=1) == Exit(pid, "noproc")


async def test_exit_signal_ends_a_context_process_receive(local_node: Node) -> None:
    async with local_node.process() as me:
        waiting = asyncio.ensure_future(me.receive(timeout=5))
        await asyncio.sleep(0)
        local_node.exit(me.pid, "stop")
        with pytest.raises(zmesh.ProcessExited) as info:
            await waiting
        assert info.value.reason == "stop"


async def test_spawn_link_propagates_crashes_to_the_parent(local_node: Node) -> None:
    async def parent(proc: Process) -> None:
        child = proc.spawn_link(crash_on_message)
        proc.send(child, "go")
        await proc.receive()

    async with local_node.process() as me:
        pid = local_node.spawn(parent)
        ref = me.monitor(pid)
        assert await me.receive(timeout=1) == Down(ref, pid, "ValueError: boom")


async def test_spawn_refuses_a_plain_function(local_node: Node) -> None:
    def not_async(proc: Process) -> None:
        return None

    with pytest.raises(zmesh.ConfigError, match="async function"):
        local_node.spawn(not_async)
    assert local_node.processes() == []


async def test_messages_to_dead_pids_are_dropped(local_node: Node) -> None:
    pid = local_node.spawn(idle)
    local_node.exit(pid, "kill")
    local_node.send(pid, "nobody")  # no error, like Erlang
    assert not local_node.is_alive(pid)


async def test_node_exit_leaves_no_task_running() -> None:
    before = set(asyncio.all_tasks())
    async with Node("n", listen=None) as node:
        for _ in range(50):
            node.spawn(idle)
    await asyncio.sleep(0)
    assert set(asyncio.all_tasks()) - before == set()


async def test_pids_compare_by_value_and_name_their_node(local_node: Node) -> None:
    pid = local_node.spawn(idle)
    same = zmesh.Pid(pid.node, pid.id, pid.creation)
    assert pid == same and hash(pid) == hash(same)
    assert local_node.name in str(pid)
    assert pid.node == "local" and pid.creation == local_node.creation


def test_nodes_made_in_the_same_millisecond_are_different_incarnations() -> None:
    nodes = [Node("same", listen=None) for _ in range(50)]
    creations = [n.creation for n in nodes]
    assert creations == sorted(set(creations))  # strictly increasing: no two alike
