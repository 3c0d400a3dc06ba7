"""The chaos soak in CI: 300 seeds of a 5-node simulated cluster, each with 100 chatty
processes, monitors and registrations under a random fault every virtual second for
20 virtual seconds, then healed and checked (per-pair FIFO, one Down per monitor,
links once, one owner per name within a virtual second of settling, no session up on a
closed link, none lost after the final settle). Any failing seed is named with its
replay command.

Bounded: about a minute of wall time on an idle machine (the target is <= 3 min);
`scripts/sim_soak.py --seeds 20000` runs the long soak.
"""

from __future__ import annotations

import pytest

from zmesh.testing import Simulation, run_simulation
from zmesh.testing.soak import SoakReport, chaos

SEEDS = 300


async def _soak(sim: Simulation) -> SoakReport:
    return await chaos(sim, processes=100, seconds=20.0)


@pytest.mark.timeout(400)
def test_300_seeds_of_chaos_hold_every_invariant() -> None:
    failed: dict[int, list[str]] = {}
    messages = faults = 0
    for seed in range(SEEDS):
        report = run_simulation(_soak, n=5, seed=seed)
        messages += report.messages
        faults += len(report.faults)
        if report.problems:
            failed[seed] = report.problems[:3]
    replay = [
        f"python scripts/sim_soak.py --seeds 1 --start {s} --seconds 20 --verbose" for s in failed
    ]
    assert failed == {}, replay
    assert faults >= SEEDS * 19  # a fault every virtual second, really injected
    assert messages > SEEDS * 500  # and the processes really talked through them
