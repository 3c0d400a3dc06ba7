"""Fault schedules in virtual time, drawn by hypothesis, run on a `Simulation`.

    @settings(max_examples=200, deadline=None)
    @given(schedule=simulation_schedules(["n1", "n2", "n3"]))
    def test_names_converge(schedule):
        run_schedule(check_names, schedule, n=3)     # check_names: async def (sim) -> None

A `SimSchedule` is a seed and a list of (virtual seconds to wait, fault step); the steps
are those of `zmesh.testing.strategies`, always valid to run and ending with every
fault undone. Since the simulation is deterministic, a failing schedule fails again
every time, so hypothesis shrinks it to a minimal one (fewer steps, shorter waits, seed
0). The failure carries a note with the seed and a one-line replay command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st

from zmesh.testing.simulation import Simulation, simulate
from zmesh.testing.strategies import KINDS, Step, apply, fault_schedules

T = TypeVar("T")

#: The waits drawn between steps, virtual seconds: none, shorter than a tick, about
#: one failure-detection time, and long enough for the cluster to re-form.
GAPS = (0.0, 0.05, 0.3, 1.0, 2.5)


@dataclass(frozen=True)
class SimSchedule:
    """A seed and timed fault steps; its repr is valid Python (see `replay`)."""

    seed: int
    steps: tuple[tuple[float, Step], ...]

    def replay(self, check: str = "check", n: int = 3) -> str:
        """The one line that replays this schedule against `check` on `n` nodes."""
        return f"zmesh.testing.run_schedule({check}, {self!r}, n={n})"


def simulation_schedules(
    names: Sequence[str],
    max_steps: int = 6,
    *,
    min_steps: int = 0,
    kinds: Collection[str] = KINDS,
    gaps: Sequence[float] = GAPS,
    max_seed: int = 2**16,
) -> st.SearchStrategy[SimSchedule]:
    """Schedules over `names`: a seed in [0, max_seed] and `fault_schedules(...)` steps,
    each after a wait drawn from `gaps`. Shrinks towards fewer steps, the first gap
    and seed 0."""
    return _timed(
        st.integers(0, max_seed),
        fault_schedules(names, max_steps, min_steps=min_steps, kinds=kinds),
        st.sampled_from(list(gaps)),
    )


@st.composite
def _timed(
    draw: st.DrawFn,
    seeds: st.SearchStrategy[int],
    schedules: st.SearchStrategy[list[Step]],
    gaps: st.SearchStrategy[float],
) -> SimSchedule:
    seed = draw(seeds)
    steps = draw(schedules)
    return SimSchedule(seed, tuple((draw(gaps), step) for step in steps))


async def play(sim: Simulation, schedule: SimSchedule) -> None:
    """Run `schedule`'s steps on `sim`, each after its wait (virtual seconds)."""
    for wait, step in schedule.steps:
        if wait:
            await asyncio.sleep(wait)
        await apply(sim, step)


def run_schedule(
    check: Callable[[Simulation], Awaitable[T]],
    schedule: SimSchedule,
    *,
    n: int = 3,
    settle_timeout: float = 30.0,
    **node_options: Any,
) -> T:
    """On a fresh `Simulation(n, seed=schedule.seed, ...)`, play `schedule`, settle, and
    return `await check(sim)`. A failure is noted with the line that replays it."""

    async def scenario(sim: Simulation) -> T:
        await play(sim, schedule)
        await sim.settle(timeout=settle_timeout)
        return await check(sim)

    name = getattr(check, "__qualname__", "check")
    return simulate(
        scenario, n=n, seed=schedule.seed, replay=schedule.replay(name, n), **node_options
    )
