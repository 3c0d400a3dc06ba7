"""The pytest plugin (entry point `zmesh`): a ready cluster as a fixture.

    async def test_failover(zmesh_cluster):        # three nodes, fully meshed
        await zmesh_cluster.partition(["n1"], ["n2", "n3"])
        await zmesh_cluster.settle()

Choose the size with `@pytest.mark.zmesh_nodes(5)`. Tests must run on an asyncio
event loop (pytest-asyncio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from zmesh.testing.cluster import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "zmesh_nodes(n): size of the zmesh_cluster fixture")


@pytest.fixture
async def zmesh_cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """A started, settled `Cluster` of 3 nodes (or `@pytest.mark.zmesh_nodes(n)`)."""
    marker = request.node.get_closest_marker("zmesh_nodes")
    n = int(marker.args[0]) if marker is not None else 3
    async with Cluster(n) as cluster:
        yield cluster
