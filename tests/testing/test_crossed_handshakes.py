"""A session never comes up on a link the handshake has closed.

Found by the simulation soak (seed 57, `scripts/sim_soak.py --seconds 20`): after a
partition, n3 and n4 kept dialling each other in lockstep. n3 answered n4's HELLO on
the link of its own connect attempt; that attempt then timed out and closed the link,
which no session used yet, though the inbound handshake did. n4's AUTH then brought the
session up on the closed link: n3 believed itself connected and sent nothing, and n4
dropped the session after `down_after` although no fault was left (a flap, with every
link and monitor across it fired). A link an inbound handshake still uses is no longer
closed. Real time cannot reach this interleaving on purpose; the simulation replays it.
"""

from __future__ import annotations

import pytest

from zmesh.testing import Simulation, run_simulation
from zmesh.testing.checkers import session_problems
from zmesh.testing.soak import SoakReport, chaos

pytestmark = pytest.mark.timeout(60)


async def soak_20s(sim: Simulation) -> SoakReport:
    return await chaos(sim, processes=100, seconds=20.0)


def test_no_session_is_lost_after_the_crossed_handshakes_of_seed_57() -> None:
    report = run_simulation(soak_20s, n=5, seed=57)
    assert report.flaps == 0
    assert report.problems == []


def test_the_session_checker_names_a_session_up_on_a_closed_link() -> None:
    async def scenario(sim: Simulation) -> tuple[list[str], list[str]]:
        before = session_problems(sim)
        peer = sim["n1"]._dist.peer("n2")  # type: ignore[union-attr]
        assert peer is not None
        peer.link.close()
        return before, session_problems(sim)

    before, after = run_simulation(scenario, n=2)
    assert before == []
    assert after == ["n1's session with n2 is up on a closed link"]
