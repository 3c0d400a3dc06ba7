"""Distributed data across real `zmesh join` OS processes and a test node: a replicated
map (writes replicate both ways; a SIGKILLed process restarted under its name catches
up on what was written while it was dead) and the partitioned store (acknowledged
writes stay readable at r=2 after one member is SIGKILLed)."""

from __future__ import annotations

import signal

import pytest
from joined import Joined, start_join

from zmesh import Node
from zmesh.testing import wait_until

COOKIE = "data-os-cookie"
APP = ("--app", "zmesh_test_app:map_app")


def pongs(shared: dict, name: str) -> set:  # type: ignore[type-arg]
    return {k[2] for k in shared if type(k) is tuple and k[:2] == ("pong", name)}


@pytest.mark.timeout(90)
async def test_a_map_shared_by_joined_processes_converges_and_a_restart_catches_up() -> None:
    nodes: dict[str, Joined] = {}
    try:
        nodes["d1"] = start_join("d1", COOKIE, *APP)
        for name in ("d2", "d3"):
            nodes[name] = start_join(name, COOKIE, "--seed", nodes["d1"].address, *APP)
        async with Node("tester", listen="tcp://127.0.0.1:0", cookie=COOKIE) as me:
            await me.connect(nodes["d1"].address)
            m = await me.replicated_map("shared")
            names = ["d1", "d2", "d3"]
            await wait_until(lambda: all(("up", n) in m for n in names), 20, what="all up")
            m.put(("ping", 1), "one")
            await wait_until(
                lambda: all(pongs(m.to_dict(), n) == {1} for n in names), 20, what="pongs"
            )
            nodes["d2"].signal(signal.SIGKILL)
            nodes["d2"].proc.wait(10)
            await wait_until(lambda: "d2" not in me.nodes(), 20, what="d2 seen down")
            m.put(("ping", 2), "two")  # written while d2 is dead
            first = m.get(("up", "d2"))
            nodes["d2"] = start_join("d2", COOKIE, "--seed", nodes["d1"].address, *APP)
            await wait_until(lambda: m.get(("up", "d2")) != first, 20, what="d2 back")
            await wait_until(
                lambda: all(pongs(m.to_dict(), n) == {1, 2} for n in names),
                20,
                what="every process, the restarted one too, saw both pings",
            )
            assert m.get(("pong", "d2", 2)) == "two"
    finally:
        for node in nodes.values():
            node.stop()


@pytest.mark.timeout(90)
async def test_a_store_shared_by_joined_processes_keeps_acknowledged_writes_through_a_kill() -> (
    None
):
    nodes: dict[str, Joined] = {}
    app = ("--app", "zmesh_test_app:data_app")  # a member of the store "bench", n=3
    try:
        nodes["s1"] = start_join("s1", COOKIE, *app)
        for name in ("s2", "s3", "s4"):
            nodes[name] = start_join(name, COOKIE, "--seed", nodes["s1"].address, *app)
        async with Node("tester", listen="tcp://127.0.0.1:0", cookie=COOKIE) as me:
            await me.connect(nodes["s1"].address)
            kv = await me.kv_open("bench", n=3)
            await wait_until(lambda: len(kv.members()) == 5, 20, what="five members")
            keys = [f"k{i}" for i in range(60)]
            for k in keys:
                await kv.put(k, k.upper(), w=2)
            assert sorted(await kv.keys()) == sorted(keys)
            nodes["s2"].signal(signal.SIGKILL)  # at most n - w = 1 replica lost
            nodes["s2"].proc.wait(10)
            await wait_until(lambda: "s2" not in me.nodes(), 20, what="s2 seen down")
            for k in keys:
                assert await kv.get(k, r=2) == k.upper()
            await kv.put("after", 1, w=2)  # s2's share, if any, goes to a fallback
            assert await kv.get("after", r=2) == 1
    finally:
        for node in nodes.values():
            node.stop()
