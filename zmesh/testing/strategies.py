"""Hypothesis strategies for fault schedules, and `apply` to run one step on a `Cluster`.

    @settings(max_examples=5, deadline=None)
    @given(schedule=fault_schedules(["n1", "n2", "n3"], max_steps=5))
    async def test_registry_converges(schedule):
        async with Cluster(3) as c:
            await apply(c, schedule)         # or one step at a time: apply(c, step)
            await c.settle()
            ...  # the invariant, on a whole, healed cluster

A schedule is always valid to run in order: it never pauses or kills the last running
node, never resumes a node that is not paused, never pauses a killed one; and it ends
with every fault undone (`Heal`, then `Resume` for each paused node and `Restart` for
each killed one), so after the last step `settle()` expects the full mesh.

Importing this module needs hypothesis (zmesh's `test` extra).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from zmesh.errors import ConfigError
from zmesh.testing.cluster import Cluster


@dataclass(frozen=True)
class Partition:
    """`cluster.partition(*groups)`."""

    groups: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Heal:
    """`cluster.heal()`."""


@dataclass(frozen=True)
class Kill:
    """`cluster.kill(name)`."""

    name: str


@dataclass(frozen=True)
class Pause:
    """`cluster.pause(name)`."""

    name: str


@dataclass(frozen=True)
class Resume:
    """`cluster.resume(name)`."""

    name: str


@dataclass(frozen=True)
class Restart:
    """`cluster.restart(name)`."""

    name: str


@dataclass(frozen=True)
class Drop:
    """`cluster.drop(a, b, rate)`."""

    a: str
    b: str
    rate: float


@dataclass(frozen=True)
class Delay:
    """`cluster.delay(a, b, seconds)`."""

    a: str
    b: str
    seconds: float


Step = Partition | Heal | Kill | Pause | Resume | Restart | Drop | Delay
_STEP_TYPES = (Partition, Heal, Kill, Pause, Resume, Restart, Drop, Delay)

#: Every kind of step `fault_schedules` can draw, by name.
KINDS = frozenset({"partition", "heal", "kill", "pause", "resume", "restart", "drop", "delay"})
DROP_RATES = (0.1, 0.5, 1.0)
DELAYS = (0.01, 0.05, 0.2)


async def apply(cluster: Cluster, step: Step | Sequence[Step]) -> None:
    """Run one step, or a whole schedule in order, on `cluster`; returns once the
    faults are installed. Raises ConfigError for anything that is not a step."""
    if isinstance(step, list | tuple):
        for one in step:
            if not isinstance(one, _STEP_TYPES):
                raise ConfigError(f"apply: a schedule holds steps, got {one!r} in it")
        for one in step:
            await apply(cluster, one)
        return
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
        case _:
            raise ConfigError(
                f"apply takes a step ({', '.join(t.__name__ for t in _STEP_TYPES)}) "
                f"or a schedule (a list of steps), got {step!r}"
            )


def fault_schedules(
    names: Sequence[str],
    max_steps: int = 6,
    *,
    min_steps: int = 0,
    kinds: Collection[str] = KINDS,
) -> st.SearchStrategy[list[Step]]:
    """Valid schedules of `min_steps` to `max_steps` faults over `names` (plus the
    closing steps that undo them), drawing only the step kinds in `kinds`.

    Drop rates come from DROP_RATES and delays from DELAYS (seconds); partitions split
    the nodes into two or three groups. Shrinks towards fewer, simpler steps.
    """
    names = list(names)
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"fault_schedules needs distinct node names, got {names!r}")
    unknown = set(kinds) - KINDS
    if unknown:
        raise ConfigError(f"unknown step kinds {sorted(unknown)}; choose from {sorted(KINDS)}")
    if not 0 <= min_steps <= max_steps:
        raise ConfigError(f"need 0 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    return _schedules(names, min_steps, max_steps, frozenset(kinds))


@st.composite
def _schedules(
    draw: st.DrawFn, names: list[str], min_steps: int, max_steps: int, kinds: frozenset[str]
) -> list[Step]:
    killed: set[str] = set()
    paused: set[str] = set()
    steps: list[Step] = []
    pairs = len(names) > 1
    for _ in range(draw(st.integers(min_steps, max_steps))):
        running = [n for n in names if n not in killed and n not in paused]
        # Candidates per kind under the rules above; a kind with none is not drawn.
        options: dict[str, list[str]] = {
            "partition": names if pairs else [],
            "heal": names,
            "drop": names if pairs else [],
            "delay": names if pairs else [],
            "kill": sorted(paused) + (running if len(running) > 1 else []),
            "pause": running if len(running) > 1 else [],
            "resume": sorted(paused),
            "restart": names,
        }
        available = sorted(k for k in kinds if options[k])
        if not available:
            break
        kind = draw(st.sampled_from(available))
        if kind == "partition":
            top = min(2, len(names) - 1)
            sides = st.lists(st.integers(0, top), min_size=len(names), max_size=len(names))
            side = draw(sides.filter(lambda s: len(set(s)) > 1))  # at least two groups
            groups = [
                tuple(n for n, g in zip(names, side, strict=True) if g == i) for i in range(3)
            ]
            steps.append(Partition(tuple(g for g in groups if g)))
        elif kind == "heal":
            steps.append(Heal())
        elif kind in ("drop", "delay"):
            a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
            if kind == "drop":
                steps.append(Drop(a, b, draw(st.sampled_from(DROP_RATES))))
            else:
                steps.append(Delay(a, b, draw(st.sampled_from(DELAYS))))
        else:
            name = draw(st.sampled_from(options[kind]))
            if kind == "kill":
                killed.add(name)
                paused.discard(name)
                steps.append(Kill(name))
            elif kind == "pause":
                paused.add(name)
                steps.append(Pause(name))
            elif kind == "resume":
                paused.discard(name)
                steps.append(Resume(name))
            else:
                killed.discard(name)
                paused.discard(name)
                steps.append(Restart(name))
    steps.append(Heal())
    steps += [Resume(n) for n in sorted(paused)]
    steps += [Restart(n) for n in sorted(killed)]
    return steps
