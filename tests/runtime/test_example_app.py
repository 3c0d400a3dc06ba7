"""examples/counter_app.py (the deployment docs' application) starts its service."""

from __future__ import annotations

import sys
from pathlib import Path

import zmesh
from zmesh.testing import TEST_CONFIG

from ..conftest import COOKIE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


async def test_the_counter_app_declares_one_counter_service() -> None:
    app = zmesh.Application.load("counter_app:start")
    async with zmesh.Node("a", cookie=COOKIE, config=TEST_CONFIG, load=["counter_app"]) as a:
        assert await app.start(a) is None
        assert [s.name for s in a.services()] == ["counter"]
        assert await a.call("counter", "increment") == 1
