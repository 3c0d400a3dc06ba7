"""Hypothesis strategies for fault schedules, and `apply` to run a step on a Cluster.

A schedule is a list of steps that is always valid to run in order: it never resumes
a node that is not paused, never restarts a node twice at once, keeps at least one
node alive, and ends with every fault undone (heal, resume, restart the dead), so a
test can `settle()` afterwards and check its invariants on a whole cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from zmesh.testing.cluster import Cluster


@dataclass(frozen=True)
class Partition:
    groups: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Heal:
    pass


@dataclass(frozen=True)
class Kill:
    name: str


@dataclass(frozen=True)
class Pause:
    name: str


@dataclass(frozen=True)
class Resume:
    name: str


@dataclass(frozen=True)
class Restart:
    name: str


@dataclass(frozen=True)
class Drop:
    a: str
    b: str
    rate: float


@dataclass(frozen=True)
class Delay:
    a: str
    b: str
    seconds: float


Step = Partition | Heal | Kill | Pause | Resume | Restart | Drop | Delay


async def apply(cluster: Cluster, step: Step) -> None:
    """Run one step of a schedule on `cluster`."""
    match step:
        case Partition(groups):
            await cluster.partition(*groups)
        case Heal():
            await cluster.heal()
        case Kill(name):
            await cluster.kill(name)
        case Pause(name):
            await cluster.pause(name)
        case Resume(name):
            await cluster.resume(name)
        case Restart(name):
            await cluster.restart(name)
        case Drop(a, b, rate):
            await cluster.drop(a, b, rate)
        case Delay(a, b, seconds):
            await cluster.delay(a, b, seconds)


@st.composite
def fault_schedules(draw: st.DrawFn, names: Sequence[str], max_steps: int = 6) -> list[Step]:
    """A valid schedule of at most `max_steps` faults over `names`, ending fully healed."""
    names = list(names)
    dead: set[str] = set()
    paused: set[str] = set()
    steps: list[Step] = []
    for _ in range(draw(st.integers(0, max_steps))):
        alive = [n for n in names if n not in dead and n not in paused]
        kinds = ["partition", "heal", "drop", "delay"]
        if len(alive) > 1:
            kinds += ["kill", "pause"]
        if paused:
            kinds.append("resume")
        if dead:
            kinds.append("restart")
        kind = draw(st.sampled_from(kinds))
        if kind == "partition":
            side = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
            steps.append(Partition((tuple(sorted(side)),)))
        elif kind == "heal":
            steps.append(Heal())
        elif kind in ("drop", "delay"):
            a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
            if kind == "drop":
                steps.append(Drop(a, b, draw(st.sampled_from([0.1, 0.5, 1.0]))))
            else:
                steps.append(Delay(a, b, draw(st.sampled_from([0.01, 0.05]))))
        elif kind == "kill":
            name = draw(st.sampled_from(alive))
            dead.add(name)
            steps.append(Kill(name))
        elif kind == "pause":
            name = draw(st.sampled_from(alive))
            paused.add(name)
            steps.append(Pause(name))
        elif kind == "resume":
            name = draw(st.sampled_from(sorted(paused)))
            paused.discard(name)
            steps.append(Resume(name))
        else:
            name = draw(st.sampled_from(sorted(dead)))
            dead.discard(name)
            steps.append(Restart(name))
    steps.append(Heal())
    steps += [Resume(n) for n in sorted(paused)] + [Restart(n) for n in sorted(dead)]
    return steps
