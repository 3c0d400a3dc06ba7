"""Shared fixtures: nodes over real loopback tcp."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

import zmesh

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

COOKIE = "test-cookie"


@pytest.fixture
async def local_node() -> AsyncIterator[zmesh.Node]:
    """A node without sockets, for the local process semantics."""
    async with zmesh.Node("local", listen=None) as node:
        yield node


@pytest.fixture
async def two_nodes() -> AsyncIterator[tuple[zmesh.Node, zmesh.Node]]:
    """Two connected nodes over real tcp on loopback."""
    async with zmesh.Node("a", cookie=COOKIE) as a, zmesh.Node("b", cookie=COOKIE) as b:
        await b.connect(a.address)  # type: ignore[arg-type]
        yield a, b


def pytest_configure(config: pytest.Config) -> None:
    # The loadable test app must be importable here and in `zmesh join` subprocesses.
    import sys

    support = os.path.join(os.path.dirname(__file__), "support")
    if support not in sys.path:
        sys.path.insert(0, support)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (support, os.environ.get("PYTHONPATH", "")) if p
    )
