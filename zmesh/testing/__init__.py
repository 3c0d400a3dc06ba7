"""Test your distributed code: an in-process cluster over real sockets, with faults.

`Cluster(n)` starts nodes "n1".."nN" on loopback tcp, fully meshed; `partition`,
`heal`, `drop`, `delay`, `kill`, `pause`, `resume` and `restart` inject faults under
the transport; `settle()` waits until every node's view matches who can reach whom.

The pytest plugin (`zmesh.testing.plugin`, registered as the `pytest11` entry point
`zmesh`) provides the `zmesh_cluster` and `zmesh_cluster_factory` fixtures;
`zmesh.testing.strategies` has hypothesis strategies for fault schedules.

`run_simulation(test, n=5, seed=0)` runs the same nodes in virtual time over an
in-memory network (`Simulation`, a `Cluster`), every run replayable from its seed;
`zmesh.testing.schedules` draws timed fault schedules for it, and
`zmesh.testing.checkers` checks delivery order, signals and the registry. See
docs/testing.md.
"""

from zmesh.testing.cluster import (
    TEST_CONFIG,
    Cluster,
    SettleTimeout,
    WaitTimeout,
    wait_until,
)
from zmesh.testing.faults import LinkFaults
from zmesh.testing.sim_loop import Deadlock, SimulationError, VirtualTimeLoop
from zmesh.testing.simulation import Simulation, run_simulation

__all__ = [
    "TEST_CONFIG",
    "Cluster",
    "Deadlock",
    "LinkFaults",
    "SettleTimeout",
    "Simulation",
    "SimulationError",
    "VirtualTimeLoop",
    "WaitTimeout",
    "run_simulation",
    "wait_until",
]


def __getattr__(name: str) -> object:
    # run_schedule (zmesh.testing.schedules) needs hypothesis, the `test` extra: it is
    # imported only when asked for, and left out of __all__ so `import *` never needs it.
    if name == "run_schedule":
        from zmesh.testing.schedules import run_schedule

        return run_schedule
    raise AttributeError(f"module 'zmesh.testing' has no attribute {name!r}")
