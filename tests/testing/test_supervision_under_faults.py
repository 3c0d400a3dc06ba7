"""Supervision under faults: a named, supervised server keeps its name across crashes
during a partition, and every node finds the restarted one after the heal; on a real
Cluster and, unchanged, in deterministic simulation."""

from __future__ import annotations

import pytest
import zmesh_test_app as app

import zmesh
from zmesh.testing import Cluster, run_simulation, wait_until

pytestmark = pytest.mark.timeout(60)


async def test_a_supervised_name_survives_crashes_during_a_partition(
    zmesh_cluster: Cluster,
) -> None:
    await a_supervised_name_survives_crashes_during_a_partition(zmesh_cluster)


@pytest.mark.parametrize("seed", range(20))
def test_a_supervised_name_survives_crashes_during_a_partition_in_simulation(seed: int) -> None:
    run_simulation(a_supervised_name_survives_crashes_during_a_partition, n=3, seed=seed)


async def a_supervised_name_survives_crashes_during_a_partition(c: Cluster) -> None:
    home = c["n1"]
    await home.start_supervisor([zmesh.child(app.Counter, 0, name="counted")])
    first = home.whereis("counted")
    await wait_until(lambda: all(n.whereis("counted") == first for n in c), 3)
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle()
    assert c["n2"].whereis("counted") is None  # n1's names went with n1's session
    for _ in range(2):  # crashes while cut off: the supervisor restarts it under its name
        old = home.whereis("counted")
        home.exit(old, "kill")  # type: ignore[arg-type]
        await wait_until(lambda o=old: home.whereis("counted") not in (None, o), 2)
    await c.heal()
    await c.settle()
    current = home.whereis("counted")
    await wait_until(lambda: all(n.whereis("counted") == current for n in c), 3)
    assert current != first
    assert await c["n3"].call("counted", "increment") == 1
