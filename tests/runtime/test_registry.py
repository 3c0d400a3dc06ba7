"""The global registry and process groups over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import Node, NodeConfig
from zmesh.testing import wait_until

from ..conftest import COOKIE

FAST = NodeConfig(tick=0.1, down_after=0.5)


@pytest.fixture
async def trio() -> AsyncIterator[list[Node]]:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node(f"r{i}", cookie=COOKIE, config=FAST))
            for i in range(3)
        ]
        for n in nodes[1:]:
            await n.connect(nodes[0].address)  # type: ignore[arg-type]
        await wait_until(lambda: all(len(n.nodes()) == 2 for n in nodes))
        yield nodes


async def test_register_whereis_unregister_on_a_local_node(local_node: Node) -> None:
    pid = local_node.spawn(app.idle)
    assert await local_node.register("svc", pid) is True
    assert local_node.whereis("svc") == pid
    assert await local_node.register("svc", pid) is True  # idempotent for the owner
    other = local_node.spawn(app.idle)
    assert await local_node.register("svc", other) is False
    assert local_node.registered() == ["svc"]
    await local_node.unregister("svc")
    assert local_node.whereis("svc") is None
    with pytest.raises(zmesh.ConfigError):
        await local_node.register("", pid)


async def test_a_name_is_visible_on_every_node(trio: list[Node]) -> None:
    a, b, c = trio
    pid = b.spawn(app.idle)
    assert await b.register("shared", pid)
    await wait_until(lambda: a.whereis("shared") == pid and c.whereis("shared") == pid, 1)


async def test_racing_registrations_have_exactly_one_winner(trio: list[Node]) -> None:
    for round_ in range(20):
        name = f"race{round_}"
        pids = [n.spawn(app.idle) for n in trio]
        results = await asyncio.gather(
            *(n.register(name, p) for n, p in zip(trio, pids, strict=True))
        )
        assert sum(results) == 1, results
        winner = pids[results.index(True)]
        await wait_until(lambda w=winner, nm=name: all(n.whereis(nm) == w for n in trio), 1)


async def test_exit_removes_the_name_everywhere(trio: list[Node]) -> None:
    a, _b, c = trio
    pid = a.spawn(app.idle)
    assert await a.register("short-lived", pid)
    await wait_until(lambda: c.whereis("short-lived") == pid)
    a.exit(pid, "kill")
    await wait_until(lambda: all(n.whereis("short-lived") is None for n in trio), 1)


async def test_node_loss_removes_its_names(trio: list[Node]) -> None:
    a, b, c = trio
    pid = c.spawn(app.idle)
    assert await c.register("on-c", pid)
    await wait_until(lambda: a.whereis("on-c") == pid)
    await c.stop()
    await wait_until(lambda: a.whereis("on-c") is None and b.whereis("on-c") is None, 2)


async def test_a_late_joiner_gets_the_whole_table(trio: list[Node]) -> None:
    pids = {}
    for i, n in enumerate(trio):
        pids[f"n{i}"] = n.spawn(app.idle)
        assert await n.register(f"n{i}", pids[f"n{i}"])
    async with Node("late", cookie=COOKIE, config=FAST) as late:
        await late.connect(trio[1].address)  # type: ignore[arg-type]
        await wait_until(lambda: all(late.whereis(k) == v for k, v in pids.items()), 1)


async def test_send_call_and_cast_by_name_across_nodes(trio: list[Node]) -> None:
    a, b, _ = trio
    pid = await a.start(app.Counter, 5, name="counter")
    await wait_until(lambda: b.whereis("counter") == pid)
    assert await b.call("counter", "increment") == 6
    b.cast("counter", "reset")
    assert await b.call("counter", "get") == 0
    async with b.process() as me:
        echo = a.spawn(app.echo)
        assert await a.register("echo", echo)
        await wait_until(lambda: b.whereis("echo") == echo)
        b.send("echo", (me.pid, "by name"))
        assert await me.receive(timeout=2) == ("echo", "by name")


async def test_start_with_a_taken_name_raises_name_taken(local_node: Node) -> None:
    first = await local_node.start(app.Counter, name="only")
    with pytest.raises(zmesh.NameTaken) as info:
        await local_node.start(app.Counter, name="only")
    assert info.value.owner == first
    assert local_node.processes() == [first]


async def test_remote_start_with_a_name_returns_once_visible_here(trio: list[Node]) -> None:
    a, b, _ = trio
    b._dist.load = frozenset({"zmesh_test_app"})  # type: ignore[union-attr]
    pid = await a.start(app.Counter, name="remote-named", on=b.name)
    assert a.whereis("remote-named") == pid


async def test_a_supervised_named_child_is_found_again_after_each_restart(trio: list[Node]) -> None:
    a, b, _ = trio
    sup = await a.start_supervisor([zmesh.child(app.Counter, 0, name="supervised")])
    for _ in range(3):
        old = a.whereis("supervised")
        assert old is not None
        a.exit(old, "kill")
        await wait_until(lambda o=old: a.whereis("supervised") not in (None, o), 1)
        await wait_until(lambda: b.whereis("supervised") == a.whereis("supervised"), 1)
        assert await b.call("supervised", "increment") == 1
    assert a.is_alive(sup)


@pytest.mark.parametrize("resolve", ["kill", "notify", "unregister"])
async def test_a_healed_partition_converges_to_one_owner(resolve: str) -> None:
    config = NodeConfig(tick=0.1, down_after=0.5, resolve=resolve)
    async with (
        Node("left", cookie=COOKIE, config=config) as left,
        Node("right", cookie=COOKIE, config=config) as right,
    ):

        async def holder(proc: zmesh.Process) -> None:
            proc.trap_exit = resolve == "notify"
            while True:
                message = await proc.receive()
                if isinstance(message, zmesh.NameConflict):
                    proc.node.send(observer.pid, ("conflict", proc.pid, message))

        async with right.process() as observer:
            # Apart (a partition): each side registers the same names.
            early = [left.spawn(holder) for _ in range(5)]
            for i, pid in enumerate(early):
                assert await left.register(f"name{i}", pid)
            await asyncio.sleep(0.01)
            late = [right.spawn(holder) for _ in range(5)]
            for i, pid in enumerate(late):
                assert await right.register(f"name{i}", pid)
            refs = {observer.monitor(pid): pid for pid in late}
            await right.connect(left.address)  # type: ignore[arg-type]  # the heal
            # Every node agrees; the earlier registration keeps the name.
            await wait_until(
                lambda: (
                    all(left.whereis(f"name{i}") == early[i] for i in range(5))
                    and all(right.whereis(f"name{i}") == early[i] for i in range(5))
                ),
                1,
            )
            if resolve == "kill":
                downs = [await observer.receive(timeout=2) for _ in late]
                assert {(d.pid, d.reason) for d in downs} == {(p, "name_conflict") for p in late}
                assert set(refs) == {d.ref for d in downs}
            elif resolve == "notify":
                notes = [await observer.receive(timeout=2) for _ in late]
                assert sorted(n[1].id for n in notes) == sorted(p.id for p in late)
                assert all(n[2].winner == early[int(n[2].name[4:])] for n in notes)
                assert all(right.is_alive(p) for p in late)
            else:
                assert all(right.is_alive(p) for p in late)
            assert sorted(right.registered()) == [f"name{i}" for i in range(5)]


async def test_a_resolve_function_decides_what_happens_to_the_loser() -> None:
    calls: list[tuple[str, zmesh.Pid, zmesh.Pid]] = []

    def resolve(name: str, winner: zmesh.Pid, loser: zmesh.Pid) -> None:
        calls.append((name, winner, loser))

    config = NodeConfig(tick=0.1, down_after=0.5, resolve=resolve)
    async with (
        Node("first", cookie=COOKIE, config=config) as first,
        Node("second", cookie=COOKIE, config=config) as second,
    ):
        early = first.spawn(app.idle)
        assert await first.register("contested", early)
        await asyncio.sleep(0.01)
        late = second.spawn(app.idle)
        assert await second.register("contested", late)
        await second.connect(first.address)  # type: ignore[arg-type]
        await wait_until(lambda: calls == [("contested", early, late)], 2)
        assert second.whereis("contested") == early and second.is_alive(late)


async def test_process_groups_across_nodes(trio: list[Node]) -> None:
    a, b, c = trio
    pa, pb = a.spawn(app.idle), b.spawn(app.idle)
    a.pg.join("workers", pa)
    b.pg.join("workers", pb)
    b.pg.join("workers", pb)
    await wait_until(
        lambda: sorted(c.pg.members("workers"), key=str) == sorted([pa, pb, pb], key=str)
    )
    assert a.pg.local_members("workers") == [pa]
    b.pg.leave("workers", pb)
    await wait_until(lambda: sorted(c.pg.members("workers"), key=str) == sorted([pa, pb], key=str))
    b.exit(pb, "kill")
    await wait_until(lambda: c.pg.members("workers") == [pa] and a.pg.members("workers") == [pa])
    await a.stop()
    await wait_until(lambda: c.pg.members("workers") == [] and c.pg.which_groups() == [], 2)
    with pytest.raises(zmesh.ConfigError):
        b.pg.join("workers", pa)


async def test_process_groups_agree_after_reconnect() -> None:
    async with (
        Node("x", cookie=COOKIE, config=FAST) as x,
        Node("y", cookie=COOKIE, config=FAST) as y,
    ):
        px = x.spawn(app.idle)
        x.pg.join("g", px)
        py = y.spawn(app.idle)
        y.pg.join("g", py)
        await y.connect(x.address)  # type: ignore[arg-type]
        await wait_until(lambda: set(x.pg.members("g")) == {px, py} == set(y.pg.members("g")))


async def test_registry_ops_about_foreign_pids_are_refused(trio: list[Node]) -> None:
    a, b, _ = trio
    assert b._dist is not None
    impostor = zmesh.Pid(a.name, 999, a.creation)
    b._dist.broadcast("reg.add", ["stolen", impostor, 1.0, "r1", 1])
    await asyncio.sleep(0.05)
    assert a.whereis("stolen") is None
    assert a.stats()["bad_envelopes"] >= 1
