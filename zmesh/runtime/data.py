"""Distributed data as `Node` methods: replicated maps (a mixin of `Node`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zmesh.runtime.replicated_map import MapRouter, ReplicatedMap

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution


class DataMixin:
    """`replicated_map` of `Node`."""

    if TYPE_CHECKING:
        _services: list[Any]

        def _need_dist(self) -> Distribution: ...

    def _map_router(self) -> MapRouter:
        router: MapRouter | None = getattr(self, "_data_maps", None)
        if router is None:
            router = MapRouter(self)  # type: ignore[arg-type]
            self._data_maps = router
            self._services.append(router)
        return router

    async def replicated_map(self, name: str) -> ReplicatedMap:
        """This node's replica of the add-wins LWW map `name`, opened if new.

        Every node that opens a map of the same name holds a full replica: reads and
        writes are local, deltas replicate in the background, and a joining or healed
        node exchanges full states. Raises ConfigError for a bad name, or if the node
        has no `listen` address.
        """
        self._need_dist()
        return self._map_router().open(name)
