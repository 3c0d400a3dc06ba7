"""Supervisors: strategies, restart types, intensity, ordered shutdown, dynamic children."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import zmesh
from zmesh import Down, GenServer, Node, child


class Worker(GenServer):
    async def init(self, tag: str, log: zmesh.Pid | None = None) -> None:
        self.tag = tag
        self.log = log
        if log is not None:
            self.node.send(log, ("started", tag))

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "crash":
            raise RuntimeError(self.tag)
        if request == "stop":
            self.stop("normal")
        return self.tag


class Stubborn(GenServer):
    """Traps exits, then takes too long to terminate: must be killed after its shutdown time."""

    async def init(self) -> None:
        self.process.trap_exit = True

    async def terminate(self, reason: object) -> None:
        await asyncio.sleep(10)


async def pids(node: Node, sup: zmesh.Pid) -> dict[str, zmesh.Pid | None]:
    return {c.id: c.pid for c in await node.which_children(sup)}


async def crash(node: Node, pid: zmesh.Pid) -> None:
    with pytest.raises(zmesh.CallError):
        await node.call(pid, "crash")


async def wait_restarted(
    node: Node, sup: zmesh.Pid, old: dict[str, Any], ids: set[str]
) -> dict[str, Any]:
    for _ in range(200):
        now = await pids(node, sup)
        if all(now[i] is not None and now[i] != old[i] for i in ids):
            return now
        await asyncio.sleep(0.005)
    raise AssertionError(f"{ids} not restarted: {now}")


SPECS = [child(Worker, "a", id="a"), child(Worker, "b", id="b"), child(Worker, "c", id="c")]


async def test_one_for_one_restarts_only_the_crashed_child(local_node: Node) -> None:
    sup = await local_node.start_supervisor(SPECS, strategy="one_for_one")
    before = await pids(local_node, sup)
    await crash(local_node, before["b"])  # type: ignore[arg-type]
    after = await wait_restarted(local_node, sup, before, {"b"})
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert await local_node.call(after["b"], "tag") == "b"


async def test_one_for_all_restarts_every_child(local_node: Node) -> None:
    sup = await local_node.start_supervisor(SPECS, strategy="one_for_all")
    before = await pids(local_node, sup)
    await crash(local_node, before["b"])  # type: ignore[arg-type]
    await wait_restarted(local_node, sup, before, {"a", "b", "c"})


async def test_rest_for_one_restarts_the_child_and_later_ones(local_node: Node) -> None:
    sup = await local_node.start_supervisor(SPECS, strategy="rest_for_one")
    before = await pids(local_node, sup)
    await crash(local_node, before["b"])  # type: ignore[arg-type]
    after = await wait_restarted(local_node, sup, before, {"b", "c"})
    assert after["a"] == before["a"]


async def test_children_start_in_order_and_restart_in_order(local_node: Node) -> None:
    async with local_node.process() as log:
        specs = [child(Worker, t, log.pid, id=t) for t in "abc"]
        sup = await local_node.start_supervisor(specs, strategy="one_for_all")
        assert [await log.receive(timeout=1) for _ in "abc"] == [("started", t) for t in "abc"]
        first = (await pids(local_node, sup))["a"]
        await crash(local_node, first)  # type: ignore[arg-type]
        assert [await log.receive(timeout=1) for _ in "abc"] == [("started", t) for t in "abc"]


async def test_transient_child_is_not_restarted_after_a_normal_exit(local_node: Node) -> None:
    specs = [child(Worker, "t", id="t", restart="transient")]
    sup = await local_node.start_supervisor(specs)
    pid = (await pids(local_node, sup))["t"]
    with pytest.raises(zmesh.NoProc):
        await local_node.call(pid, "stop")  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert (await pids(local_node, sup))["t"] is None
    await local_node.restart_child(sup, "t")
    pid = (await pids(local_node, sup))["t"]
    await crash(local_node, pid)  # type: ignore[arg-type]
    await wait_restarted(local_node, sup, {"t": pid}, {"t"})


async def test_temporary_child_is_never_restarted(local_node: Node) -> None:
    sup = await local_node.start_supervisor([child(Worker, "x", id="x", restart="temporary")])
    pid = (await pids(local_node, sup))["x"]
    await crash(local_node, pid)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert await pids(local_node, sup) == {}


async def test_exceeding_restart_intensity_takes_the_supervisor_down(local_node: Node) -> None:
    sup = await local_node.start_supervisor(SPECS, max_restarts=2, max_seconds=5.0)
    async with local_node.process() as me:
        ref = me.monitor(sup)
        for _ in range(3):
            current = (await pids(local_node, sup))["a"]
            await crash(local_node, current)  # type: ignore[arg-type]
            await asyncio.sleep(0.02)
        down = await me.receive(timeout=2)
        assert down == Down(ref, sup, "shutdown")
    assert local_node.processes() == []


async def test_nested_supervisor_escalates_to_its_parent(local_node: Node) -> None:
    inner = [child(Worker, "leaf", id="leaf")]
    specs = [
        child(Worker, "sibling", id="sibling"),
        child(zmesh.Supervisor, inner, "one_for_one", 0, 5.0, id="inner"),
    ]
    top = await local_node.start_supervisor(specs, max_restarts=5)
    before = await pids(local_node, top)
    inner_children = await pids(local_node, before["inner"])  # type: ignore[arg-type]
    await crash(local_node, inner_children["leaf"])  # type: ignore[arg-type]
    after = await wait_restarted(local_node, top, before, {"inner"})
    assert after["sibling"] == before["sibling"]
    assert (await pids(local_node, after["inner"]))["leaf"] is not None  # type: ignore[arg-type]


async def test_shutdown_is_in_reverse_start_order_and_kills_stubborn_children(
    local_node: Node,
) -> None:
    specs = [
        child(Worker, "first", id="first"),
        child(Stubborn, id="stubborn", shutdown=0.1),
        child(Worker, "last", id="last"),
    ]
    sup = await local_node.start_supervisor(specs)
    children = await pids(local_node, sup)
    async with local_node.process() as me:
        refs = {me.monitor(pid): name for name, pid in children.items()}  # type: ignore[arg-type]
        sup_ref = me.monitor(sup)
        local_node.exit(sup, "shutdown")
        order = []
        for _ in range(3):
            down = await me.receive(timeout=2)
            order.append((refs[down.ref], down.reason))
        assert order == [("last", "shutdown"), ("stubborn", "killed"), ("first", "shutdown")]
        assert await me.receive(timeout=2) == Down(sup_ref, sup, "shutdown")


async def test_terminate_and_restart_child(local_node: Node) -> None:
    sup = await local_node.start_supervisor(SPECS)
    await local_node.terminate_child(sup, "b")
    assert (await pids(local_node, sup))["b"] is None
    new = await local_node.restart_child(sup, "b")
    assert (await pids(local_node, sup))["b"] == new
    with pytest.raises(zmesh.SupervisorError, match="running"):
        await local_node.restart_child(sup, "b")
    with pytest.raises(zmesh.SupervisorError, match="no child"):
        await local_node.terminate_child(sup, "zzz")


async def test_plain_function_children_are_supervised(local_node: Node) -> None:
    async def looper(proc: zmesh.Process) -> None:
        while True:
            msg = await proc.receive()
            if msg == "die":
                raise RuntimeError("asked")

    sup = await local_node.start_supervisor([child(looper, id="loop")])
    first = (await pids(local_node, sup))["loop"]
    local_node.send(first, "die")  # type: ignore[arg-type]
    await wait_restarted(local_node, sup, {"loop": first}, {"loop"})


async def test_dynamic_supervisor_start_terminate_and_max_children(local_node: Node) -> None:
    sup = await local_node.start_dynamic_supervisor(max_children=2)
    a = await local_node.start_child(sup, child(Worker, "a"))
    b = await local_node.start_child(sup, child(Worker, "b"))
    with pytest.raises(zmesh.SupervisorError, match="max_children"):
        await local_node.start_child(sup, child(Worker, "c"))
    await crash(local_node, a)
    for _ in range(100):
        rows = await local_node.which_children(sup)
        if len(rows) == 2 and a not in [r.pid for r in rows] and all(r.pid for r in rows):
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("crashed dynamic child not restarted")
    await local_node.terminate_child(sup, b)
    assert b not in [r.pid for r in await local_node.which_children(sup)]
    assert not local_node.is_alive(b)


async def test_invalid_specs_are_refused_with_the_bad_value() -> None:
    with pytest.raises(zmesh.ConfigError, match="restart"):
        child(Worker, restart="sometimes")  # type: ignore[arg-type]
    async with Node("n", listen=None) as node:
        with pytest.raises(zmesh.CallError, match="strategy"):
            await node.start_supervisor([], strategy="all_for_none")
