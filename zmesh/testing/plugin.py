"""The pytest plugin (entry point `zmesh` in `pytest11`): clusters as fixtures.

    async def test_minority_side_sees_nobody(zmesh_cluster):   # 3 nodes, fully meshed
        await zmesh_cluster.partition(["n1"])
        await zmesh_cluster.settle()
        assert zmesh_cluster["n1"].nodes() == []

    @pytest.mark.zmesh_nodes(5, load=["myapp.workers"])     # size and Node options
    async def test_five(zmesh_cluster): ...

    async def test_two_clusters(zmesh_cluster_factory):
        a = await zmesh_cluster_factory(2)
        b = await zmesh_cluster_factory(2, cookie="other")

Every cluster a fixture made is closed when the test ends. The fixtures are async: run
the tests with pytest-asyncio (`asyncio_mode = "auto"`, or mark them). This module
imports zmesh only when a fixture is used, so installing zmesh costs other test
suites nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from zmesh.testing.cluster import Cluster

ClusterFactory = Callable[..., Awaitable["Cluster"]]
_F = TypeVar("_F", bound=Callable[..., Any])

if TYPE_CHECKING:

    def _async_fixture(fn: _F) -> _F: ...

else:
    try:  # pytest-asyncio's decorator works in its strict and auto modes alike
        from pytest_asyncio import fixture as _async_fixture
    except ImportError:  # pragma: no cover - without pytest-asyncio the fixtures cannot run
        _async_fixture = pytest.fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "zmesh_nodes(n, **node_options): node count and Node options of the zmesh_cluster "
        "fixture (default 3 nodes)",
    )


@_async_fixture
async def zmesh_cluster_factory() -> AsyncIterator[ClusterFactory]:
    """`await zmesh_cluster_factory(n=3, **node_options)`: a started, meshed `Cluster`;
    all of them are closed at the end of the test."""
    from zmesh.testing.cluster import Cluster

    clusters: list[Cluster] = []

    async def make(n: int = 3, **node_options: Any) -> Cluster:
        cluster = Cluster(n, **node_options)
        await cluster.__aenter__()
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for cluster in reversed(clusters):
            try:
                await cluster.close()
            except BaseException as exc:  # close the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


@_async_fixture
async def zmesh_cluster(
    request: pytest.FixtureRequest, zmesh_cluster_factory: ClusterFactory
) -> Cluster:
    """A started, fully meshed `Cluster` of 3 nodes, or as `@pytest.mark.zmesh_nodes` says."""
    marker = request.node.get_closest_marker("zmesh_nodes")
    if marker is None:
        return await zmesh_cluster_factory()
    return await zmesh_cluster_factory(*marker.args, **marker.kwargs)
