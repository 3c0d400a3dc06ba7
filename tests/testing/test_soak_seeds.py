"""Seeds of the simulation soak (`scripts/sim_soak.py --seconds 20`) that once failed, replayed.

Seed 17209: n2 answered n3's HELLO on the link of its session with n3, which was still
up; that session then went down (heartbeat silence under a delay) and `forget` closed
its link, but the inbound handshake kept it. n3's AUTH then brought the session up on
the closed link: n2 believed itself connected and sent nothing, and n3 dropped the
session after `down_after` with no fault left. An inbound handshake whose link was
closed meanwhile now completes on the current link to the peer.

Seed 11166: not a node bug. A frame n1 sent n4 was dropped by a `drop` fault, and the
frames behind it were held back 0.5 s by a `delay` fault; `heal` lifted both, and
`settle` returned after its 0.2 s quiet period, before the held frames landed. n4 saw
the gap only then and dropped the session (correctly), which counted as a flap after
the final settle. `settle` now also waits out the frames a lifted delay still holds.

Seed 38261: n2 and n3 reconnected at once after a frame gap, each answering the other's
HELLO. n3 flushed its AUTH (for n2's challenge), its WELCOME (for n2's AUTH), PEERS and
its first casts (the registry, pg and service tables) as one frame. On n2 that frame came
from a still untrusted identity: the AUTH made it trusted, but the rest of the frame was
refused as "before the handshake", so n2 never learned n3's names, and nothing sends a
table again while the session stays up. The envelopes behind a trusting AUTH now go to
the session.
"""

from __future__ import annotations

import pytest

from zmesh.testing import Simulation, run_simulation
from zmesh.testing.soak import SoakReport, chaos

pytestmark = pytest.mark.timeout(60)


async def soak_20s(sim: Simulation) -> SoakReport:
    return await chaos(sim, processes=100, seconds=20.0)


def test_a_handshake_answered_on_a_session_that_went_down_comes_up_on_an_open_link() -> None:
    report = run_simulation(soak_20s, n=5, seed=17209)
    assert report.flaps == 0
    assert report.problems == []


def test_settle_waits_for_the_frames_a_lifted_delay_still_holds() -> None:
    report = run_simulation(soak_20s, n=5, seed=11166)
    assert report.flaps == 0
    assert report.problems == []


def test_settle_after_a_heal_outlasts_the_lifted_delay() -> None:
    async def scenario(sim: Simulation) -> float:
        await sim.delay("n1", "n2", 0.5)
        await sim.heal()
        start = sim.now()
        await sim.settle()
        return sim.now() - start

    assert run_simulation(scenario, n=2) >= 0.5


def test_envelopes_flushed_behind_the_auth_that_trusts_a_peer_reach_its_session() -> None:
    report = run_simulation(soak_20s, n=5, seed=38261)
    assert report.problems == []
    assert report.registry_converged_in < 0.5
