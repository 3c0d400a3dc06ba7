"""A chaos workload for a `Simulation`: chatty processes, names, monitors and a fault
every virtual second, then a heal and the checkers (`zmesh.testing.checkers`).

    report = run_simulation(chaos, n=5, seed=42)     # chaos: the default soak
    assert report.problems == [], report

`scripts/sim_soak.py` runs it over many seeds; the tests run it over a few hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

from zmesh.errors import ZmeshError
from zmesh.runtime.node import Node
from zmesh.runtime.process import Process
from zmesh.terms import Down, Exit, Pid, Ref
from zmesh.testing.checkers import DeliveryLog, SignalLog, registry_problems, session_problems
from zmesh.testing.cluster import WaitTimeout, wait_until
from zmesh.testing.simulation import Simulation

#: How long the registry may take to agree everywhere after `settle`, virtual seconds
#: (its tables ride right behind the node-up; measured: at most 0.29 s over 300 seeds).
REGISTRY_BOUND = 1.0
#: How often each chatter sends, virtual seconds (drawn uniformly from this range).
SEND_EVERY = (0.5, 1.5)


@dataclass
class SoakReport:
    """What a soak did and every problem the checkers found (empty: all held)."""

    seed: int
    virtual_seconds: float = 0.0
    faults: list[str] = field(default_factory=list)
    messages: int = 0
    downs: int = 0
    exits: int = 0
    #: Sessions lost after the final `settle` (nothing was faulty then: a flap).
    flaps: int = 0
    #: Virtual seconds from the final `settle` until every node agreed on every name.
    registry_converged_in: float = 0.0
    digest: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class _World:
    sim: Simulation
    random: random.Random
    log: DeliveryLog = field(default_factory=DeliveryLog)
    signals: SignalLog = field(default_factory=SignalLog)
    chatters: list[Pid] = field(default_factory=list)
    watched: dict[Ref, Pid] = field(default_factory=dict)  # by monitor ref: the target
    watcher_of: dict[Ref, Pid] = field(default_factory=dict)


async def _chatter(proc: Process, world: _World, seed: str) -> None:
    """Send numbered messages to random chatters; check every one that arrives."""
    rng = random.Random(seed)
    sent: dict[Pid, int] = {}
    me = proc.pid
    while True:
        try:
            message = await proc.receive(timeout=rng.uniform(*SEND_EVERY))
        except TimeoutError:
            target = rng.choice(world.chatters)
            if target == me:
                continue
            number = sent.get(target, 0)
            sent[target] = number + 1
            proc.send(target, ("msg", me, number, world.log.stamp(me, target)))
            continue
        if isinstance(message, tuple) and message[0] == "msg":
            _, src, number, epoch = message
            world.log.received(src, me, number, epoch)


async def _watcher(proc: Process, world: _World) -> None:
    """Record every Down and Exit signal it gets (it traps exits)."""
    while True:
        signal = await proc.receive()
        if isinstance(signal, Down | Exit):
            world.signals.got(proc.pid, signal)


def _populate(world: _World, node: Node, count: int) -> None:
    world.log.watch(node)
    for i in range(count):
        pid = node.spawn(_chatter, world, f"{world.sim.seed}:{node.name}:{node.creation}:{i}")
        world.chatters.append(pid)


async def _anchor(proc: Process) -> None:
    """Idle until an exit signal takes it (it is linked to a watcher on another node)."""
    await proc.receive()


def _watch_some(world: _World, node: Node, count: int, anchors: list[Pid]) -> None:
    """A watcher on `node` monitoring `count` chatters and linked to the `anchors` of
    the other nodes."""
    watcher = node.spawn(_watcher, world)
    proc = node._local(watcher)
    assert proc is not None
    proc.trap_exit = True  # before the links: an exit may come back at once
    others = [p for p in world.chatters if p.node != node.name]
    for target in world.random.sample(others, min(count, len(others))):
        ref = proc.monitor(target)
        world.signals.monitored(ref, target)
        world.watched[ref] = target
        world.watcher_of[ref] = watcher
    for anchor in anchors:
        if anchor.node != node.name:
            proc.link(anchor)


async def _fault(
    world: _World, dead: set[str], paused: set[str], down_until: dict[str, float]
) -> str:
    """One random fault (or the repair of one), as the sim's seeded random source says."""
    sim, rng = world.sim, world.random
    names = sim.names
    now = sim.now()
    for name in sorted(dead):
        if down_until[name] <= now:
            dead.discard(name)
            node = await sim.restart(name)
            _populate(world, node, len(world.chatters) // len(names) // 2 or 1)
            return f"restart {name}"
    for name in sorted(paused):
        if down_until[name] <= now:
            paused.discard(name)
            await sim.resume(name)
            return f"resume {name}"
    kind = rng.choice(
        ["partition", "partition", "heal", "heal", "kill", "pause", "delay", "drop", "register"]
    )
    if kind == "partition":
        side = [n for n in names if rng.random() < 0.5] or [names[0]]
        await sim.partition(side)
        return f"partition {side}"
    if kind == "kill" and not dead and not paused:
        victim = rng.choice(names)
        await sim.kill(victim)
        dead.add(victim)
        down_until[victim] = now + rng.uniform(1.0, 4.0)
        return f"kill {victim}"
    if kind == "pause" and not dead and not paused:
        victim = rng.choice(names)
        await sim.pause(victim)
        paused.add(victim)
        down_until[victim] = now + rng.uniform(0.2, 2.0)
        return f"pause {victim}"
    if kind in ("delay", "drop"):
        a, b = rng.sample(names, 2)
        if kind == "delay":
            await sim.delay(a, b, rng.choice([0.01, 0.1, 0.5]))
        else:
            await sim.drop(a, b, rng.choice([0.05, 0.2, 1.0]))
        return f"{kind} {a} {b}"
    if kind == "register":
        home = rng.choice([n for n in names if n not in dead and n not in paused] or names)
        node = sim[home]
        mine = [p for p in world.chatters if p.node == home and node.is_alive(p)]
        if mine:
            sim_name = f"name{rng.randrange(8)}"
            # A registration in a minority waits on a leader it cannot reach: don't block.
            task = asyncio.get_running_loop().create_task(node.register(sim_name, rng.choice(mine)))
            task.add_done_callback(_consume)
        return f"register on {home}"
    await sim.heal()
    return "heal"


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        exc = task.exception()
        if exc is not None and not isinstance(exc, ZmeshError):
            raise exc


async def chaos(
    sim: Simulation,
    *,
    processes: int = 100,
    seconds: float = 120.0,
    fault_every: float = 1.0,
    settle_timeout: float = 60.0,
) -> SoakReport:
    """Run `processes` chatters (spread over the nodes) and a fault every `fault_every`
    virtual seconds for `seconds`; then heal, settle and check. The report lists every
    problem the checkers found."""
    world = _World(sim, random.Random(f"zmesh-soak:{sim.seed}"))
    report = SoakReport(sim.seed)
    start = sim.now()
    per_node = max(processes // len(sim.names), 1)
    for name in sim.names:
        _populate(world, sim[name], per_node)
    anchors = [sim[name].spawn(_anchor) for name in sim.names]
    for name in sim.names:
        _watch_some(world, sim[name], 5, anchors)
    dead: set[str] = set()
    paused: set[str] = set()
    down_until: dict[str, float] = {}
    killed_targets: set[str] = set()
    while sim.now() - start < seconds:
        await asyncio.sleep(fault_every)
        fault = await _fault(world, dead, paused, down_until)
        if fault.startswith("kill "):
            killed_targets.add(fault.split()[1])
        report.faults.append(f"{sim.now():.3f} {fault}")
    await sim.heal()
    for name in sorted(paused):
        await sim.resume(name)
    for name in sorted(dead):
        await sim.restart(name)
    await sim.settle(timeout=settle_timeout)
    report.problems += session_problems(sim)
    settled_downs = world.log.connection_losses()
    settled_at = sim.now()
    with contextlib.suppress(WaitTimeout):
        await wait_until(lambda: not registry_problems(sim), REGISTRY_BOUND)
    report.registry_converged_in = sim.now() - settled_at
    await asyncio.sleep(0.5)  # signals and messages still in flight land
    # Monitors whose target died with its node must have fired; a watcher that died with
    # its own node is excused.
    gone = [
        ref
        for ref, target in world.watched.items()
        if target.node in killed_targets and world.watcher_of[ref].node not in killed_targets
    ]
    report.flaps = world.log.connection_losses() - settled_downs
    if report.flaps:
        report.problems.append(f"{report.flaps} sessions lost after the final settle")
    report.problems += world.log.problems
    report.problems += world.signals.problems(gone)
    report.problems += registry_problems(sim)
    report.messages = world.log.received_count
    report.downs = sum(world.signals.downs.values())
    report.exits = sum(world.signals.exits.values())
    report.virtual_seconds = sim.now() - start
    report.digest = sim.trace_digest()
    return report
