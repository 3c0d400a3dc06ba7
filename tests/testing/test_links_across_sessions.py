"""A link's exit signal arrives at most once, even when the sender's node sends it on a
session that replaced the one whose loss already fired the link.

Found by the simulation soak (seed 1876 of `scripts/sim_soak.py --seconds 20`): n3 is
paused past `down_after`, so n1 and n2 fire their links to n3's processes with
"noconnection". On resume n3 finds both peers down, one after the other: the first loss
kills n3's anchor (it does not trap exits), whose exit signal then goes to the peer n3
has not yet found down, over the link n3 keeps for it, which that peer trusts again as
soon as the two reconnect. The watcher there used to get a second `Exit` from a link
that was gone; as in OTP, a link's exit signal is now ignored once the link is gone.
The same scenario runs over real sockets and in virtual time.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import zmesh
from zmesh.testing import Cluster, run_simulation

pytestmark = pytest.mark.timeout(60)


async def anchor(proc: zmesh.Process) -> None:
    await proc.receive()


async def exits_per_link_after_a_pause(c: Cluster) -> dict[tuple[str, str], int]:
    exits: Counter[tuple[str, str]] = Counter()

    async def watcher(proc: zmesh.Process) -> None:
        while True:
            signal = await proc.receive()
            if isinstance(signal, zmesh.Exit):
                exits[(proc.node.name, str(signal.pid))] += 1

    target = c["n3"].spawn(anchor)
    for name in ("n1", "n2"):
        proc = c[name]._local(c[name].spawn(watcher))
        assert proc is not None
        proc.trap_exit = True
        proc.link(target)
    await asyncio.sleep(0.1)
    await c.pause("n3")
    await asyncio.sleep(1.0)  # past down_after: n1 and n2 fire their links
    await c.resume("n3")
    await c.settle()
    await asyncio.sleep(1.0)
    return dict(exits)


async def test_a_link_fires_once_across_a_pause_over_real_sockets(zmesh_cluster: Cluster) -> None:
    exits = await exits_per_link_after_a_pause(zmesh_cluster)
    assert sorted(exits.values()) == [1, 1], exits


@pytest.mark.parametrize("seed", range(10))
def test_a_link_fires_once_across_a_pause_in_simulation(seed: int) -> None:
    exits = run_simulation(exits_per_link_after_a_pause, n=3, seed=seed)
    assert sorted(exits.values()) == [1, 1], exits
