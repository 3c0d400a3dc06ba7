"""Test your distributed code: an in-process cluster over real sockets, with faults.

`Cluster(n)` starts nodes "n1".."nN" on loopback tcp, fully meshed; `partition`,
`heal`, `drop`, `delay`, `kill`, `pause`, `resume` and `restart` inject faults under
the transport; `settle()` waits until every node's view matches who can reach whom.

The pytest plugin (`zmesh.testing.plugin`, registered as the `pytest11` entry point
`zmesh`) provides the `zmesh_cluster` and `zmesh_cluster_factory` fixtures;
`zmesh.testing.strategies` has hypothesis strategies for fault schedules. See
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

__all__ = ["TEST_CONFIG", "Cluster", "LinkFaults", "SettleTimeout", "WaitTimeout", "wait_until"]
