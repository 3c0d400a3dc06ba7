"""Test your distributed code: an in-process cluster over real sockets, with faults.

`Cluster(n)` starts nodes "n1".."nN" on loopback tcp; `partition`, `heal`, `drop`,
`delay`, `kill`, `pause`, `resume` and `restart` inject faults under the transport;
`settle()` waits until every node's view matches who can reach whom. The pytest
plugin (`zmesh.testing.plugin`, installed as an entry point) provides the
`zmesh_cluster` fixture; `zmesh.testing.strategies` has hypothesis strategies for
fault schedules.
"""

from zmesh.testing.cluster import TEST_CONFIG, Cluster, SettleTimeout
from zmesh.testing.faults import LinkFaults

__all__ = ["TEST_CONFIG", "Cluster", "LinkFaults", "SettleTimeout"]
