"""Deterministic simulation: the virtual-time loop, the in-memory network under the
production node code, replay from a seed, the checkers and the schedule strategies.

Every test here runs nodes in virtual time (no socket, no real wait); the claims about
real sockets are in test_cluster.py, which runs the same fault API over loopback tcp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmesh_test_app as app
from hypothesis import given, settings
from hypothesis import strategies as st

import zmesh
from zmesh import Down, Exit, Pid, Ref
from zmesh.testing import (
    TEST_CONFIG,
    Deadlock,
    Simulation,
    SimulationError,
    VirtualTimeLoop,
    run_simulation,
    wait_until,
)
from zmesh.testing.checkers import DeliveryLog, SignalLog, registry_problems, service_problems
from zmesh.testing.schedules import SimSchedule, play, run_schedule, simulation_schedules
from zmesh.testing.sim_network import SimNetwork, SimTransport
from zmesh.testing.simulation import simulate
from zmesh.testing.strategies import Heal, Kill, Partition, Restart, Resume

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


# -- the virtual-time loop -------------------------------------------------------------------


def test_virtual_time_jumps_straight_to_the_next_timer() -> None:
    loop = VirtualTimeLoop()
    try:
        woke: list[float] = []

        async def sleeper() -> None:
            await asyncio.sleep(3600)
            woke.append(loop.time())
            await asyncio.sleep(0.25)
            woke.append(loop.time())

        loop.run_until_complete(sleeper())
        assert woke == [3600.0, 3600.25]
    finally:
        loop.close()


def test_every_kind_of_real_io_is_refused_loudly() -> None:
    loop = VirtualTimeLoop()
    a, b = socket.socketpair()
    try:
        with pytest.raises(SimulationError, match="file descriptor"):
            loop.add_reader(a.fileno(), lambda: None)
        with pytest.raises(SimulationError, match="executor thread"):
            loop.run_in_executor(None, print)
        with pytest.raises(SimulationError, match=r"real connection|name lookup"):
            loop.run_until_complete(asyncio.open_connection("127.0.0.1", 1))
    finally:
        a.close()
        b.close()
        loop.close()


def test_a_zeromq_node_cannot_start_inside_a_simulation() -> None:
    loop = VirtualTimeLoop()
    node = zmesh.Node("real", listen="tcp://127.0.0.1:0")
    try:
        with pytest.raises(SimulationError, match="file descriptor"):
            loop.run_until_complete(node.boot())
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        transport = node._dist._transport if node._dist is not None else None
        if transport is not None:  # bound before it was refused: close it by hand
            transport._router.close(0)  # type: ignore[union-attr]
            transport._ctx.destroy(linger=0)  # type: ignore[union-attr]


def test_a_run_where_nothing_can_ever_happen_is_a_deadlock_not_a_hang() -> None:
    loop = VirtualTimeLoop()
    try:
        with pytest.raises(Deadlock, match="every task waits"):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()


def test_a_simulation_refuses_a_real_loop() -> None:
    async def start() -> None:
        async with Simulation(2):
            pass

    with pytest.raises(SimulationError, match="VirtualTimeLoop"):
        asyncio.run(start())


async def test_run_simulation_refuses_to_nest_in_a_running_loop() -> None:
    async def scenario(sim: Simulation) -> None:
        return None

    with pytest.raises(SimulationError, match="plain `def` test"):
        run_simulation(scenario)


class _ShrinkingDelay:
    """Each frame held back less than the one before: all are due at the same instant."""

    def __init__(self) -> None:
        self.delay = 1.0

    def action(self, address: str) -> float:
        self.delay /= 2
        return self.delay


def test_frames_due_at_the_same_instant_land_in_send_order() -> None:
    loop = VirtualTimeLoop()
    try:
        network = SimNetwork(0, loop)
        landed: list[int] = []

        def on_frame(identity: bytes, parts: list[bytes], user: str | None) -> None:
            landed.append(msgpack.unpackb(parts[0])[0][1])  # the frame's SEQ envelope

        def ignore(*args: object) -> None:
            return None

        receiver = SimTransport(network, TEST_CONFIG, on_frame, ignore)
        sender = SimTransport(network, TEST_CONFIG, ignore, ignore)
        receiver.bind("sim://b")
        sender.bind("sim://a")
        sender.faults = _ShrinkingDelay()
        link = sender.open("sim://b")

        async def send_all() -> None:
            for i in range(60):
                link.enqueue(msgpack.packb([99, i]))
                await asyncio.sleep(0)  # one frame per loop iteration
            await asyncio.sleep(2.0)

        loop.run_until_complete(send_all())
        assert landed == list(range(60))
    finally:
        loop.close()


# -- the cluster interface in virtual time ---------------------------------------------------


def test_run_simulation_returns_what_the_test_returns_after_a_partition_and_heal() -> None:
    async def scenario(sim: Simulation) -> tuple[Any, ...]:
        assert [sim[n].nodes() for n in ("n1", "n2", "n3")] == [
            ["n2", "n3"], ["n1", "n3"], ["n1", "n2"]
        ]  # fmt: skip
        await sim.partition(["n1"], ["n2", "n3"])
        took = await sim.settle()
        cut = (sim["n1"].nodes(), sim["n2"].nodes())
        await sim.heal()
        await sim.settle()
        return cut, sim["n1"].nodes(), took >= TEST_CONFIG.down_after

    assert run_simulation(scenario, n=3) == (([], ["n3"]), ["n2", "n3"], True)


def test_messages_between_two_nodes_arrive_in_order_and_none_is_lost() -> None:
    async def scenario(sim: Simulation) -> Any:
        async with sim["n1"].process() as me:
            sink = sim["n2"].spawn(app.sink, me.pid, 2000)
            for i in range(2000):
                sim["n1"].send(sink, i)
            return await me.receive(timeout=5)

    assert run_simulation(scenario, n=2, load=["zmesh_test_app"]) == ("received", 2000)


def test_a_killed_node_fires_noconnection_and_comes_back_as_a_new_incarnation() -> None:
    async def scenario(sim: Simulation) -> Any:
        target = sim["n2"].spawn(app.idle)
        old = sim["n2"].creation
        async with sim["n1"].process() as me:
            ref = me.monitor(target)
            await sim.kill("n2")
            down = await me.receive(timeout=1)
            await sim.restart("n2")
            await sim.settle()
            return down == Down(ref, target, "noconnection"), sim["n2"].creation > old

    assert run_simulation(scenario, n=3) == (True, True)


def test_a_paused_node_is_declared_down_and_found_again_after_resume() -> None:
    async def scenario(sim: Simulation) -> Any:
        await sim.pause("n3")
        await sim.settle()
        cut = sim["n1"].nodes()
        await sim.resume("n3")
        await sim.settle()
        return cut, sim["n3"].nodes()

    assert run_simulation(scenario, n=3) == (["n2"], ["n1", "n2"])


def test_a_non_transitive_partition_cuts_one_link_only() -> None:
    async def scenario(sim: Simulation) -> Any:
        await sim.drop("n1", "n2", 1.0)
        await sim.settle()
        views = [sim[n].nodes() for n in sim.names]
        with pytest.raises(zmesh.ConfigError, match="not split into groups"):
            sim.groups()
        return views

    assert run_simulation(scenario, n=3) == [["n3"], ["n3"], ["n1", "n2"]]


async def contest_one_name(sim: Simulation) -> tuple[list[str], set[Any]]:
    """Every node registers the same name (the cluster being partitioned), then the heal:
    the registry's problems and the owners the nodes see."""
    for name in sim.names:
        node = sim[name]
        await node.register("contested", node.spawn(app.idle))
    await sim.heal()
    await sim.settle()
    await asyncio.sleep(1.0)
    return registry_problems(sim), {sim[n].whereis("contested") for n in sim.names}


def test_skewed_clocks_still_agree_on_one_owner_per_name() -> None:
    async def scenario(sim: Simulation) -> Any:
        spread = {round(sim[n].env.wall_time() - sim.now() - 1_767_225_600.0, 6) for n in sim.names}
        await sim.partition(["n1", "n2"], ["n3", "n4"])
        await sim.settle()
        return (len(spread), *await contest_one_name(sim))

    distinct, problems, owners = run_simulation(scenario, n=4, seed=3, skew=30.0)
    assert distinct == 4
    assert problems == []
    assert len(owners) == 1 and None not in owners


def test_a_drifting_clock_gains_at_its_rate_without_jumping() -> None:
    async def scenario(sim: Simulation) -> tuple[float, float, float]:
        node = sim["n1"]
        await asyncio.sleep(10.0)
        before = node.env.wall_time()
        sim.set_drift("n1", 1e-3)  # 1,000 ppm: a bad quartz
        jump = node.env.wall_time() - before
        await asyncio.sleep(100.0)
        gained = sim.clock_offset("n1")
        return jump, gained, sim.clock_offset("n2")

    jump, gained, other = run_simulation(scenario, n=2)
    assert jump == pytest.approx(0.0, abs=1e-9)
    assert gained == pytest.approx(0.1, rel=1e-6)
    assert other == 0.0


def test_drifting_clocks_still_agree_on_one_owner_per_name() -> None:
    async def scenario(sim: Simulation) -> Any:
        await sim.partition(["n1", "n2"], ["n3", "n4"])
        await sim.settle()
        await asyncio.sleep(60.0)  # at 1% drift the clocks are now up to 1.2 s apart
        spread = [sim.clock_offset(n) for n in sim.names]
        return (spread, *await contest_one_name(sim))

    spread, problems, owners = run_simulation(scenario, n=4, seed=5, drift=0.01)
    assert max(spread) - min(spread) > 0.1
    assert problems == []
    assert len(owners) == 1 and None not in owners


def test_a_leaving_node_is_seen_leaving_not_crashing() -> None:
    """The leaver's connections to its peers are not the ones it sends on, and their
    drop is noticed in less time than a frame's flight: the leaver must wait for its
    peers to answer its BYE before it closes, or they count a lost connection and
    refuse its last frames (service hand-offs, the BYE) as from a stranger."""

    async def scenario(sim: Simulation) -> list[dict[str, int]]:
        await sim.leave("n2")
        await asyncio.sleep(1.0)
        return [sim[n].stats() for n in ("n1", "n3")]

    for stats in run_simulation(scenario, n=3):
        assert stats.get("connections_lost", 0) == 0, stats
        assert stats.get("unauthenticated", 0) == 0, stats
        assert stats["peers"] == 1


# -- determinism -----------------------------------------------------------------------------


def _digest(seed: int) -> tuple[str, int]:
    async def scenario(sim: Simulation) -> tuple[str, int]:
        await sim.partition(["n1"])
        await asyncio.sleep(1.0)
        await sim.kill("n2")
        await sim.heal()
        await sim.restart("n2")
        await sim.settle()
        return sim.trace_digest(), sim.trace.events

    return run_simulation(scenario, n=3, seed=seed)


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    first, events = _digest(5)
    assert events > 100
    assert _digest(5) == (first, events)
    assert _digest(6)[0] != first


_HASHSEED_RUN = """
import asyncio
import zmesh_test_app as app
from zmesh.testing import run_simulation
from zmesh.testing.soak import chaos

async def chaotic(sim):
    report = await chaos(sim, processes=40, seconds=15)
    return report.digest, report.messages

async def stateful(sim):  # services, process groups and replicated maps
    for i in range(6):
        await sim["n1"].spawn_service(f"svc{i}", app.Counter, i)
    for node in sim:
        for k in range(3):
            node.pg.join(f"group{k}", node.spawn(app.idle))
        replica = await node.replicated_map("m")
        for k in range(5):
            replica.put(f"k{k}{node.name}", k)
    await sim.settle_services()
    await sim.partition(["n1", "n2"])
    await sim.settle_services()
    await sim.kill("n3")
    await sim.heal()
    await sim.restart("n3")
    await sim.settle_services()
    await asyncio.sleep(2)
    return sim.trace_digest(), len(sim["n1"].services())

print(*run_simulation(chaotic, n=5, seed=11))
print(*run_simulation(stateful, n=4, seed=3, load=["zmesh_test_app"]))
"""


@pytest.mark.timeout(120)
def test_a_run_is_bit_for_bit_identical_across_hash_seeds_and_processes() -> None:
    """Chaos (messages, monitors, names) and a run with services, process groups and
    replicated maps give the same digests in three interpreters with different
    PYTHONHASHSEED (and so different set orders and object addresses)."""
    outputs = set()
    support = str(ROOT / "tests" / "support")
    for hashseed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": support}
        done = subprocess.run(
            [sys.executable, "-c", _HASHSEED_RUN],
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip().replace("\n", " "))
    assert len(outputs) == 1, outputs
    chaos_digest, messages, stateful_digest, services = outputs.pop().split()
    assert len(chaos_digest) == len(stateful_digest) == 32 and chaos_digest != stateful_digest
    assert int(messages) > 100 and services == "6"


def test_a_failure_is_noted_with_its_seed_and_a_replay_line() -> None:
    async def fails(sim: Simulation) -> None:
        await asyncio.sleep(2.5)
        raise AssertionError("boom")

    with pytest.raises(AssertionError, match="boom") as info:
        run_simulation(fails, n=2, seed=99)
    notes = info.value.__notes__
    assert notes[0].startswith("zmesh simulation seed=99 failed at virtual t=")
    assert (
        notes[1] == "replay: zmesh.testing.run_simulation(" + fails.__qualname__ + ", n=2, seed=99)"
    )


# -- a bug class real time cannot reach reliably ---------------------------------------------


def test_a_frame_delayed_across_two_partitions_never_lands_out_of_order_or_twice() -> None:
    """n1's frames to n2 fly 2.5 s while the pair is cut, healed, cut and healed again
    (every session in between ends on a timeout). The old frames land after newer
    sessions carried newer messages: each must be refused, never delivered after them."""

    async def scenario(sim: Simulation) -> Any:
        log = DeliveryLog()
        for node in sim:
            log.watch(node)
        got: list[int] = []

        async def receiver(proc: zmesh.Process) -> None:
            while True:
                src, number, epoch = await proc.receive()
                log.received(src, proc.pid, number, epoch)
                got.append(number)

        dst = sim["n2"].spawn(receiver)
        sent = 0
        async with sim["n1"].process() as me:

            def send() -> None:
                nonlocal sent
                sim["n1"].send(dst, (me.pid, sent, log.stamp(me.pid, dst)))
                sent += 1

            send()
            await asyncio.sleep(0.05)  # #0 lands before the delay
            await sim.delay("n1", "n2", 2.5)  # longer than down_after: the session ends
            send()
            send()
            await asyncio.sleep(0.05)
            await sim.partition(["n1"], ["n2", "n3"])
            await sim.settle()
            await sim.heal()
            await sim.settle()
            send()
            await sim.partition(["n1"], ["n2", "n3"])
            await sim.settle()
            await sim.heal()
            await sim.settle()
            send()
            await asyncio.sleep(3.0)  # every delayed frame has landed by now
            send()
            await wait_until(lambda: got and got[-1] == sent - 1, 5)
        return got, log.problems, sim["n2"].stats().get("unauthenticated", 0)

    got, problems, refused_late = run_simulation(scenario, n=3, seed=1)
    assert refused_late >= 1  # the old session's frames did land, after the new ones
    assert problems == []
    assert got == sorted(set(got)) and got[0] == 0 and got[-1] == 5


# -- checkers --------------------------------------------------------------------------------


def _pids() -> tuple[Pid, Pid]:
    return Pid("a", 1, 1), Pid("b", 1, 1)


def test_the_delivery_log_catches_reorders_duplicates_and_unexplained_gaps() -> None:
    a, b = _pids()
    log = DeliveryLog()
    for number, epoch in [(0, 0), (1, 0), (1, 0), (0, 0), (3, 0), (7, 1)]:
        log.received(a, b, number, epoch)
    assert log.problems == [
        f"{a}->{b}: #1 arrived after #1",
        f"{a}->{b}: #0 arrived after #1",
        f"{a}->{b}: #1..#2 lost with no connection lost",
    ]
    assert log.received_count == 6


def test_the_signal_log_catches_double_downs_double_exits_and_missing_downs() -> None:
    a, b = _pids()
    r1, r2, r3 = Ref("a", 1, 1), Ref("a", 2, 1), Ref("a", 3, 1)
    log = SignalLog()
    log.monitored(r1, b)
    log.monitored(r2, b)
    log.got(a, Down(r1, b, "noconnection"))
    log.got(a, Down(r1, b, "noconnection"))
    log.got(a, Down(r3, b, "normal"))
    log.got(a, Exit(b, "killed"))
    log.got(a, Exit(b, "killed"))
    log.got(a, "not a signal")
    assert log.problems(gone=[r1, r2]) == [
        f"{r1} fired 2 Downs",
        f"Down for {r3}, which no monitor set",
        f"{a} got 2 exit signals from {b}",
        f"{r2} on {b} never fired",
    ]


def test_registry_problems_is_empty_when_settled_and_names_a_disagreement() -> None:
    async def scenario(sim: Simulation) -> Any:
        pid = sim["n1"].spawn(app.idle)
        assert await sim["n1"].register("solo", pid)
        await wait_until(lambda: all(n.whereis("solo") == pid for n in sim), 2)
        settled = registry_problems(sim)
        sim["n3"].whereis = lambda name: None  # type: ignore[method-assign] # a lost replica
        return settled, registry_problems(sim)

    settled, broken = run_simulation(scenario, n=3)
    assert settled == []
    assert len(broken) == 1 and "'solo': group ['n1', 'n2', 'n3'] disagrees" in broken[0]


# -- schedules -------------------------------------------------------------------------------

NAMES3 = ["n1", "n2", "n3"]


async def check_one_owner_per_name(sim: Simulation) -> list[str]:
    for i, name in enumerate(sim.names):
        node = sim[name]
        await node.register(f"name{i % 2}", node.spawn(app.idle))
    await sim.settle()
    await asyncio.sleep(1.0)
    return registry_problems(sim)


@settings(max_examples=25, deadline=None)
@given(schedule=simulation_schedules(NAMES3, max_steps=5))
def test_names_converge_after_any_schedule(schedule: SimSchedule) -> None:
    assert run_schedule(check_one_owner_per_name, schedule, n=3) == []


async def check_one_instance_per_service(sim: Simulation) -> list[str]:
    await sim.settle_services(timeout=30)
    return service_problems(sim)


@settings(max_examples=30, deadline=None)
@given(
    schedule=simulation_schedules(
        NAMES3, max_steps=6, kinds={"partition", "heal", "kill", "restart", "pause", "resume"}
    )
)
def test_services_run_once_per_spec_after_any_schedule(schedule: SimSchedule) -> None:
    async def scenario(sim: Simulation) -> list[str]:
        for i in range(4):
            await sim["n1"].spawn_service(f"svc{i}", app.Counter, i)
        await sim.settle_services()
        await play(sim, schedule)
        await sim.settle(timeout=30)
        return await check_one_instance_per_service(sim)

    replay = schedule.replay("check_one_instance_per_service")
    assert simulate(scenario, n=3, seed=schedule.seed, replay=replay, load=["zmesh_test_app"]) == []


def test_a_schedule_replays_bit_for_bit() -> None:
    schedule = SimSchedule(
        7,
        (
            (0.3, Partition((("n1",), ("n2", "n3")))),
            (1.0, Kill("n2")),
            (0.05, Heal()),
            (0.0, Restart("n2")),
        ),
    )

    async def digest(sim: Simulation) -> str:
        return sim.trace_digest()

    assert run_schedule(digest, schedule) == run_schedule(digest, schedule)


async def no_node_ever_restarted(sim: Simulation) -> None:
    """A stand-in for a bug that only a restart reveals."""
    assert max(sim._incarnations.values()) == 1, "a node restarted"


def _fails(schedule: SimSchedule) -> bool:
    try:
        run_schedule(no_node_ever_restarted, schedule)
    except AssertionError:
        return True
    return False


def test_a_failing_schedule_shrinks_to_the_minimal_one_and_prints_its_replay() -> None:
    """Hypothesis finds the schedules that restart a node and shrinks them to one kill
    (or restart) of n1, no waits, seed 0; the failure note is the line that replays it."""
    from hypothesis import find

    minimal = find(
        simulation_schedules(NAMES3, max_steps=4),
        _fails,
        settings=settings(max_examples=200, database=None),
    )
    assert minimal.seed == 0
    assert [step for _, step in minimal.steps] in (
        [Kill("n1"), Heal(), Restart("n1")],
        [Restart("n1"), Heal()],
    )
    assert all(wait == 0.0 for wait, _ in minimal.steps)
    namespace = {"SimSchedule": SimSchedule, "Kill": Kill, "Heal": Heal, "Restart": Restart}
    assert eval(repr(minimal), namespace) == minimal
    line = f"zmesh.testing.run_schedule(no_node_ever_restarted, {minimal!r}, n=3)"
    with pytest.raises(AssertionError, match="a node restarted") as info:
        run_schedule(no_node_ever_restarted, minimal)
    assert info.value.__notes__[-1] == f"replay: {line}"
    assert info.value.__notes__[0].startswith("zmesh simulation seed=0 failed")


@given(st.data())
@settings(max_examples=10, deadline=None)
def test_schedules_only_name_the_given_nodes_and_end_healed(data: st.DataObject) -> None:
    schedule = data.draw(simulation_schedules(NAMES3, max_steps=6))
    assert isinstance(schedule.steps[-1][1], Heal | Restart | Resume)
    for wait, step in schedule.steps:
        assert wait >= 0
        for field in dataclasses.fields(step):
            value = getattr(step, field.name)
            if isinstance(value, str) and field.name in ("name", "a", "b"):
                assert value in NAMES3


def test_docs_example_is_tested(tmp_path: Path) -> None:
    import re

    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))
    assert "test_simulated.py" in blocks, list(blocks)
    (tmp_path / "test_simulated.py").write_text(blocks["test_simulated.py"])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_simulated.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
