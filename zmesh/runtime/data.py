"""Distributed data as `Node` methods: replicated maps, presence and the partitioned
store (a mixin of `Node`). Their modules load on first use: a node that holds no data
does not carry them."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmesh.errors import ConfigError

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.kv import KV
    from zmesh.runtime.kv_router import KVRouter
    from zmesh.runtime.map_router import MapRouter
    from zmesh.runtime.presence import Presence
    from zmesh.runtime.replicated_map import ReplicatedMap
    from zmesh.terms import Pid


class DataMixin:
    """`replicated_map`, `presence`, `track`, `untrack`, `list`, `kv_open` and `kv` of
    `Node`."""

    if TYPE_CHECKING:
        _services: builtins.list[Any]
        name: str

        def _need_dist(self) -> Distribution: ...

    def _map_router(self) -> MapRouter:
        router: MapRouter | None = getattr(self, "_data_maps", None)
        if router is None:
            from zmesh.runtime.map_router import MapRouter

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

    async def presence(self) -> Presence:
        """The cluster's presence tracker (Phoenix.Tracker), started here if new."""
        tracker: Presence | None = getattr(self, "_data_presence", None)
        if tracker is None:
            from zmesh.runtime.presence import MAP_NAME, Presence

            shared = await self.replicated_map(MAP_NAME)
            tracker = getattr(self, "_data_presence", None)  # another task got here first
            if tracker is None:
                tracker = Presence(self, shared)  # type: ignore[arg-type]
                self._data_presence = tracker
        return tracker

    async def track(self, topic: str, pid: Pid, meta: Any = None) -> bool:
        """Track local process `pid` under `topic` with `meta`, cluster wide, until it
        exits or `untrack`; False if it is not alive. See `list` and `presence()`."""
        return (await self.presence()).track(topic, pid, meta)

    async def untrack(self, topic: str, pid: Pid) -> None:
        """Stop tracking local process `pid` under `topic`."""
        (await self.presence()).untrack(topic, pid)

    def list(self, topic: str) -> builtins.list[tuple[Pid, Any]]:
        """Every `(pid, meta)` tracked under `topic` in the cluster (local replica).

        Raises ConfigError until presence runs here (`await node.presence()` or
        `await node.track(...)`): before that this node holds no replica to read.
        """
        tracker: Presence | None = getattr(self, "_data_presence", None)
        if tracker is None:
            raise ConfigError(
                f"presence is not started on node {self.name!r}: "
                "call `await node.presence()` (or `await node.track(...)`) first"
            )
        return tracker.list(topic)

    async def kv_open(
        self,
        name: str = "default",
        *,
        n: int = 3,
        partitions: int = 64,
        resolve: Callable[[builtins.list[Any]], Any] | None = None,
        timeout: float = 5.0,
    ) -> KV:
        """This node's handle on the partitioned store `name`, opened (and the node made
        one of its members) if new: `partitions` vnodes on a ring of the members, each
        key on `n` of them. `resolve(values)` picks a value among concurrent siblings
        in `get`. Every member must open it with the same `n` and `partitions`
        (ConfigError here otherwise, and a peer that disagrees is not a member).
        """
        router: KVRouter | None = getattr(self, "_data_kv", None)
        if router is None:
            from zmesh.runtime.kv_router import KVRouter

            self._need_dist()
            router = KVRouter(self)  # type: ignore[arg-type]
            self._data_kv = router
            self._services.append(router)
        return await router.open(name, n, partitions, resolve, timeout)

    @property
    def kv(self) -> KV:
        """The store named "default" (`await node.kv_open()` opens it); ConfigError
        until it is open on this node."""
        router: KVRouter | None = getattr(self, "_data_kv", None)
        store = router.stores.get("default") if router is not None else None
        if store is None:
            raise ConfigError(
                f"no default store open on node {self.name!r}: call `await node.kv_open()`"
            )
        return store
