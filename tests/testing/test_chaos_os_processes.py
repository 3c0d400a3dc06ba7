"""Chaos with real OS processes: four `zmesh join` nodes serve a steady echo load from
an in-test node while one is SIGKILLed and another SIGSTOPped, then SIGCONTinued.

What must hold, with default settings: monitors on the lost nodes' processes fire
"noconnection"; each loss is seen within 3 s; the survivors answer every request all
along (nothing lost while connected); the stopped node rejoins once continued, and
its processes, which never died, answer again.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from joined import Joined, start_join

import zmesh
from zmesh import Down, Node
from zmesh.testing import wait_until

COOKIE = "chaos-cookie"
NAMES = ["c1", "c2", "c3", "c4"]
DETECTION_BOUND = zmesh.NodeConfig().down_after + 1.0  # seconds, default NodeConfig
REPLY_TIMEOUT = 3.0  # a survivor slower than this counts as a lost request


@pytest.fixture
def joined() -> Iterator[dict[str, Joined]]:
    """c1, then c2..c4 seeded with it, started in parallel; all stopped afterwards."""
    first = start_join("c1", COOKIE)
    nodes = {"c1": first}
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = {
                n: pool.submit(start_join, n, COOKIE, "--seed", first.address) for n in NAMES[1:]
            }
            errors = []
            for name, future in futures.items():
                try:
                    nodes[name] = future.result()
                except Exception as exc:  # stop the ones that did start, then report
                    errors.append(exc)
            if errors:
                raise errors[0]
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


class EchoLoad:
    """One task per node doing echo round trips every 10 ms; counts answers and misses."""

    def __init__(self, node: Node, echoes: dict[str, zmesh.Pid]) -> None:
        self.node = node
        self.answered = dict.fromkeys(echoes, 0)
        self.missed = dict.fromkeys(echoes, 0)
        self.tasks = [asyncio.create_task(self._run(n, pid)) for n, pid in echoes.items()]

    async def _run(self, name: str, pid: zmesh.Pid) -> None:
        async with self.node.process() as me:
            seq = 0
            while True:
                seq += 1
                self.node.send(pid, (me.pid, seq))
                expected = ("echo", seq)
                try:
                    await me.receive(lambda m, e=expected: m == e, timeout=REPLY_TIMEOUT)
                    self.answered[name] += 1
                except zmesh.ReceiveTimeout:
                    self.missed[name] += 1
                await asyncio.sleep(0.01)

    async def more_answers(self, names: list[str], count: int, timeout: float) -> None:
        """Wait until each of `names` has answered `count` more round trips."""
        target = {n: self.answered[n] + count for n in names}
        await wait_until(
            lambda: all(self.answered[n] >= target[n] for n in names),
            timeout,
            what=f"{count} more answers from {names} (now {self.answered})",
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def views_exclude(node: Node, names: list[str], gone: set[str], timeout: float) -> None:
    """Wait until no node of `names` lists any of `gone` among its peers (asked remotely)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        views = {n: set((await node.node_info(n))["nodes"]) for n in names}
        if not any(view & gone for view in views.values()):
            return
        if loop.time() > deadline:
            raise AssertionError(f"still seen after {timeout} s: {views}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_survivors_serve_through_sigkill_and_sigstop(joined: dict[str, Joined]) -> None:
    async with Node("chaos", cookie=COOKIE) as me_node:
        await me_node.connect(joined["c1"].address)
        await wait_until(lambda: me_node.nodes() == NAMES, 20, what="the mesh of four")
        echoes = {n: await me_node.spawn_remote(n, "zmesh_test_app:echo") for n in NAMES}
        load = EchoLoad(me_node, echoes)
        try:
            await load.more_answers(NAMES, 20, timeout=15)
            async with me_node.process() as watcher:
                refs = {n: watcher.monitor(echoes[n]) for n in ("c2", "c3")}

                joined["c2"].signal(signal.SIGKILL)
                took = await wait_until(lambda: "c2" not in me_node.nodes(), DETECTION_BOUND)
                assert await watcher.receive(timeout=1) == Down(
                    refs["c2"], echoes["c2"], "noconnection"
                )
                assert took < DETECTION_BOUND

                joined["c3"].signal(signal.SIGSTOP)
                took = await wait_until(lambda: "c3" not in me_node.nodes(), DETECTION_BOUND + 1)
                assert await watcher.receive(timeout=1) == Down(
                    refs["c3"], echoes["c3"], "noconnection"
                )
                assert took < DETECTION_BOUND

            # The survivors saw both losses too, and kept answering every request.
            await views_exclude(me_node, ["c1", "c4"], {"c2", "c3"}, DETECTION_BOUND + 2)
            await load.more_answers(["c1", "c4"], 20, timeout=10)
            assert load.missed["c1"] == load.missed["c4"] == 0

            # Continued, c3 finds the cluster again; its echo process never died.
            joined["c3"].signal(signal.SIGCONT)
            await wait_until(lambda: "c3" in me_node.nodes(), 15, what="c3 back after SIGCONT")
            await load.more_answers(["c3"], 10, timeout=15)
            await views_exclude(me_node, ["c1", "c3", "c4"], {"c2"}, 5)
        finally:
            await load.stop()
    assert joined["c2"].proc.wait(10) == -signal.SIGKILL
