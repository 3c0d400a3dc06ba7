"""zmesh.testing: an in-process cluster over real loopback sockets, faults under the
transport, the pytest fixtures, and the fault-schedule strategies.

Every wait is a settle or a wait-until loop with a generous bound; no fixed sleep is
an assertion.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmesh_test_app as app
from hypothesis import HealthCheck, example, given, settings

import zmesh
from zmesh import Down, Exit, NodeConfig
from zmesh.testing import TEST_CONFIG, Cluster, SettleTimeout, WaitTimeout, wait_until
from zmesh.testing.plugin import ClusterFactory
from zmesh.testing.strategies import (
    KINDS,
    Drop,
    Heal,
    Kill,
    Partition,
    Pause,
    Restart,
    Resume,
    Step,
    apply,
    fault_schedules,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DOWN_AFTER = TEST_CONFIG.down_after


async def echo_count(node: zmesh.Node, target: zmesh.Pid, count: int, quiet: float) -> int:
    """Send `count` round trips to an echo process, one per loop iteration (so each
    rides a frame of its own); return how many replies arrive before `quiet` s of silence."""
    async with node.process() as me:
        for i in range(count):
            node.send(target, (me.pid, i))
            await asyncio.sleep(0)  # the link flushes: the next message gets a frame of its own
        got: set[int] = set()
        while True:
            try:
                reply = await me.receive(timeout=quiet)
            except zmesh.ReceiveTimeout:
                return len(got)
            got.add(reply[1])


def recorder(log: list[tuple[str, str]]) -> Callable[[str, str], None]:
    """A node listener that appends each (event, peer) to `log`."""
    return lambda event, peer: log.append((event, peer))


# -- the cluster and its fixtures ----------------------------------------------------------


async def test_the_fixture_is_three_nodes_fully_meshed_over_tcp(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    assert c.names == ["n1", "n2", "n3"]
    assert [node.name for node in c] == c.names
    for node in c:
        assert node.nodes() == c.expected_view(node.name) == [n for n in c.names if n != node.name]
        assert node.address is not None and node.address.startswith("tcp://127.0.0.1:")
    assert c.mismatches() == {}


@pytest.mark.zmesh_nodes(4, load=["zmesh_test_app"])
async def test_the_marker_sets_size_and_node_options(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    assert len(c) == 4 and c["n4"].nodes() == ["n1", "n2", "n3"]
    pid = await c["n1"].spawn_remote("n4", "zmesh_test_app:echo")  # n4 loaded the app
    async with c["n1"].process() as me:
        c["n1"].send(pid, (me.pid, "hi"))
        assert await me.receive(timeout=5) == ("echo", "hi")


async def test_the_factory_makes_separate_clusters(zmesh_cluster_factory: ClusterFactory) -> None:
    a = await zmesh_cluster_factory(2)
    b = await zmesh_cluster_factory(2)
    assert a["n1"].nodes() == ["n2"] and b["n1"].nodes() == ["n2"]
    assert a["n1"].address != b["n1"].address


async def test_misuse_is_refused_with_a_message_naming_the_value(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    with pytest.raises(zmesh.ConfigError, match="n9"):
        await c.partition(["n9"])
    with pytest.raises(zmesh.ConfigError, match="string 'n1'"):
        await c.partition("n1", "n2")  # a str is an iterable of names to a type checker
    with pytest.raises(zmesh.ConfigError, match="two partition groups"):
        await c.partition(["n1"], ["n1", "n2"])
    with pytest.raises(zmesh.ConfigError, match="twice"):
        await c.drop("n1", "n1", 0.5)
    with pytest.raises(zmesh.ConfigError, match=r"1\.5"):
        await c.drop("n1", "n2", 1.5)
    with pytest.raises(zmesh.ConfigError, match="-1"):
        await c.delay("n1", "n2", -1)
    await c.kill("n3")
    with pytest.raises(zmesh.ConfigError, match="n3 is killed"):
        await c.pause("n3")
    with pytest.raises(KeyError, match="n7"):
        c["n7"]
    with pytest.raises(zmesh.ConfigError, match="seeds"):
        Cluster(2, seeds=["tcp://127.0.0.1:1"])
    with pytest.raises(zmesh.ConfigError, match="at least 1"):
        Cluster(0)


# -- partitions ------------------------------------------------------------------------------


async def test_partition_cuts_both_directions_and_heal_reconnects(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    events: dict[str, list[tuple[str, str]]] = {n: [] for n in c.names}
    for node in c:
        node.subscribe_nodes(recorder(events[node.name]))
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    assert c["n1"].nodes() == [] and c["n2"].nodes() == ["n3"] and c["n3"].nodes() == ["n2"]
    assert sorted(events["n1"]) == [("down", "n2"), ("down", "n3")]
    assert events["n2"] == events["n3"] == [("down", "n1")]
    await c.heal()
    await c.settle()
    assert c["n1"].nodes() == ["n2", "n3"]
    assert events["n2"] == [("down", "n1"), ("up", "n1")]


async def test_messages_across_a_partition_do_not_arrive(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    target = c["n1"].spawn(app.echo)
    async with c["n2"].process() as me:
        await c.partition(["n1"])
        # Still connected (detection takes down_after): the fault itself eats this one.
        assert "n1" in c["n2"].nodes()
        c["n2"].send(target, (me.pid, "cut"))
        await c.settle()
        c["n2"].send(target, (me.pid, "down"))  # n1 is down for n2: dropped at once
        await c.heal()
        await c.settle()
        c["n2"].send(target, (me.pid, "healed"))
        assert await me.receive(timeout=5) == ("echo", "healed")
        with pytest.raises(zmesh.ReceiveTimeout):
            await me.receive(timeout=0.3)  # nothing sent across the cut came later


async def test_a_new_partition_replaces_the_previous_one(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await c.partition(["n1"])
    await c.settle()
    await c.partition(["n2"])
    assert c.expected_view("n1") == ["n3"] and c.expected_view("n2") == []
    await c.settle()
    assert c["n1"].nodes() == ["n3"] and c["n2"].nodes() == []


async def test_settle_raises_naming_each_wrong_view(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await c.partition(["n1"])
    # Nobody can have noticed within a third of down_after.
    with pytest.raises(SettleTimeout) as caught:
        await c.settle(timeout=DOWN_AFTER / 3)
    message = str(caught.value)
    assert "n1 sees ['n2', 'n3'], expected []" in message
    assert "n2 sees ['n1', 'n3'], expected ['n3']" in message
    assert isinstance(caught.value, AssertionError | TimeoutError | zmesh.ZmeshError)
    await c.settle()


# -- lossy and slow links --------------------------------------------------------------------


async def test_drop_rate_loses_some_frames_and_zero_lifts_it(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    target = c["n2"].spawn(app.echo)
    await c.drop("n1", "n2", 0.5)
    # Each round trip survives with p = 0.25 at best; a loss may also end the session.
    assert await echo_count(c["n1"], target, 100, quiet=0.5) < 100
    await c.drop("n1", "n2", 0.0)
    await c.settle()
    assert await echo_count(c["n1"], target, 50, quiet=0.5) == 50


async def test_drop_rate_one_cuts_the_pair_and_settle_expects_it(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    await c.drop("n1", "n3", 1.0)
    assert not c.reachable("n1", "n3") and c.reachable("n1", "n2")
    await c.settle()
    assert c["n1"].nodes() == ["n2"] and c["n3"].nodes() == ["n2"]
    assert c["n2"].nodes() == ["n1", "n3"]
    await c.heal()
    await c.settle()
    assert c["n1"].nodes() == ["n2", "n3"]


async def test_delay_holds_frames_back_in_order_and_keeps_the_link(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    loop_time = asyncio.get_running_loop().time
    async with c["n1"].process() as me:
        target = c["n2"].spawn(app.echo)
        await c.delay("n1", "n2", 0.2)
        start = loop_time()
        c["n1"].send(target, (me.pid, "slow"))
        assert await me.receive(timeout=5) == ("echo", "slow")
        assert loop_time() - start >= 0.4  # held 0.2 s each way
        sink = c["n2"].spawn(app.sink, me.pid, 300)
        for i in range(300):
            c["n1"].send(sink, i)
            if i % 50 == 0:
                await asyncio.sleep(0)  # spread over several frames
        assert await me.receive(timeout=5) == ("received", 300)  # all of them, in order
    assert c["n1"].nodes() == ["n2", "n3"]  # 0.2 s is well under down_after
    await c.heal()
    async with c["n1"].process() as me:
        start = loop_time()
        c["n1"].send(target, (me.pid, "fast"))
        assert await me.receive(timeout=5) == ("echo", "fast")
        assert loop_time() - start < 0.4


# -- kill, pause, restart ----------------------------------------------------------------------


async def test_kill_fires_noconnection_monitors_and_links_on_survivors(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    victim = c["n3"].spawn(app.idle)
    async with c["n1"].process() as me, c["n2"].process() as other:
        ref = me.monitor(victim)
        other.trap_exit = True
        other.link(victim)
        await c.kill("n3")
        assert await me.receive(timeout=5) == Down(ref, victim, "noconnection")
        assert await other.receive(timeout=5) == Exit(victim, "noconnection")
    await c.settle()
    assert c["n1"].nodes() == ["n2"] and c.killed == {"n3"} and c.live() == ["n1", "n2"]
    # An abrupt close is seen from the socket, not after down_after of silence.
    assert c["n1"].stats().get("connections_lost", 0) >= 1


async def test_pause_is_seen_down_within_down_after_and_resume_rejoins(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    events: list[tuple[str, str]] = []
    c["n1"].subscribe_nodes(recorder(events))
    await c.pause("n2")
    took = await wait_until(lambda: "n2" not in c["n1"].nodes(), 5 * DOWN_AFTER)
    assert took < DOWN_AFTER + 1.0
    await c.settle()
    assert c["n2"].nodes() == ["n1", "n3"]  # frozen: it has not timed anyone out
    assert c.live() == ["n1", "n3"] and c.paused == {"n2"}
    await c.resume("n2")
    await c.settle()
    assert c["n2"].nodes() == ["n1", "n3"] and ("up", "n2") in events
    assert events[0] == ("down", "n2")


async def test_restart_is_a_new_incarnation_at_the_same_address(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    old = c["n2"]
    old_pid = old.spawn(app.idle)
    new = await c.restart("n2")
    assert new is c["n2"] and new is not old
    assert new.creation > old.creation and new.address == old.address
    await c.settle()  # also checks every peer holds the new incarnation
    async with c["n1"].process() as me:
        ref = me.monitor(old_pid)
        assert await me.receive(timeout=5) == Down(ref, old_pid, "noproc")
        target = new.spawn(app.echo)
        c["n1"].send(target, (me.pid, "again"))
        assert await me.receive(timeout=5) == ("echo", "again")


async def test_a_killed_node_restarts_and_a_paused_one_can_be_killed(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    await c.kill("n1")
    await c.pause("n2")
    await c.settle()
    assert c["n3"].nodes() == []
    await c.kill("n2")
    await c.restart("n1")
    await c.restart("n2")
    await c.settle()
    assert c["n3"].nodes() == ["n1", "n2"]


async def test_wait_until_reports_what_did_not_happen() -> None:
    with pytest.raises(WaitTimeout, match="the moon"):
        await wait_until(lambda: False, 0.05, what="the moon")


async def test_a_custom_config_is_used_as_given() -> None:
    config = NodeConfig(tick=0.05, down_after=0.3, connect_timeout=1.0, seed_retry=0.1)
    async with Cluster(2, config=config) as c:
        assert c["n1"].config is config
        await c.pause("n2")
        assert await wait_until(lambda: c["n1"].nodes() == [], 3) < 0.3 + 1.0


# -- fault schedules -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(schedule=fault_schedules(["a", "b", "c", "d"], max_steps=12))
def test_fault_schedules_are_valid_and_end_fully_healed(schedule: list[Step]) -> None:
    killed: set[str] = set()
    paused: set[str] = set()
    for step in schedule:
        running = {"a", "b", "c", "d"} - killed - paused
        if isinstance(step, Kill):
            assert step.name not in killed
            assert step.name in paused or len(running) > 1
            killed.add(step.name)
            paused.discard(step.name)
        elif isinstance(step, Pause):
            assert step.name in running and len(running) > 1
            paused.add(step.name)
        elif isinstance(step, Resume):
            assert step.name in paused
            paused.discard(step.name)
        elif isinstance(step, Restart):
            killed.discard(step.name)
            paused.discard(step.name)
        elif isinstance(step, Partition):
            members = [n for g in step.groups for n in g]
            assert sorted(members) == ["a", "b", "c", "d"] and all(step.groups)
            assert len(step.groups) >= 2
        assert {"a", "b", "c", "d"} - killed - paused, "no node left running"
    assert not killed and not paused
    last_heal = max(i for i, s in enumerate(schedule) if s == Heal())
    assert all(isinstance(s, Resume | Restart) for s in schedule[last_heal + 1 :])


def test_fault_schedules_refuse_unknown_kinds() -> None:
    with pytest.raises(zmesh.ConfigError, match="teleport"):
        fault_schedules(["a", "b"], kinds={"teleport"})
    assert "partition" in KINDS


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedule=fault_schedules(["n1", "n2", "n3"], min_steps=2, max_steps=4))
# Found by this test: a frame lost before the heal ends the session just after it.
@example(schedule=[Drop("n1", "n2", 0.5), Heal()])
async def test_any_fault_schedule_ends_in_a_meshed_cluster(schedule: list[Step]) -> None:
    async with Cluster(3, load=["zmesh_test_app"]) as c:
        for step in schedule:
            await apply(c, step)
            await asyncio.sleep(0.05)  # let the nodes run into each fault
        await c.settle(timeout=20)
        async with c["n1"].process() as me:
            for name in ("n2", "n3"):
                pid = await c["n1"].spawn_remote(name, "zmesh_test_app:echo")
                c["n1"].send(pid, (me.pid, name))
                assert await me.receive(timeout=5) == ("echo", name)


# -- docs/testing.md runs as written ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_documented_example_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))
    assert {"pyproject.toml", "test_example.py"} <= blocks.keys(), list(blocks)
    for name, body in blocks.items():
        (tmp_path / name).write_text(body)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout


async def test_apply_takes_a_whole_schedule_or_refuses_what_is_not_a_step() -> None:
    async with Cluster(2) as c:
        await apply(c, [Partition((("n1",), ("n2",))), Heal()])
        await c.settle(timeout=10)
        with pytest.raises(zmesh.ConfigError, match="apply takes a step"):
            await apply(c, "heal")  # type: ignore[arg-type]
        with pytest.raises(zmesh.ConfigError, match="a schedule holds steps"):
            await apply(c, [Heal(), [Heal()]])  # type: ignore[list-item]
