"""The seed's DistributedCounter as an application: `zmesh join --app counter_app:start
--load counter_app`. Every node declares the same service; the ring places one
instance in the cluster, which fails over and is handed off as nodes come and go."""

from __future__ import annotations

import zmesh


class DistributedCounter(zmesh.GenServer):
    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request: object, caller: object) -> object:
        if request == "increment":
            self.count += 1
        return self.count

    async def handoff(self) -> int:
        return self.count

    async def restore(self, state: int) -> None:
        self.count = state


async def start(node: zmesh.Node) -> None:
    """Declare the "counter" service (idempotent across nodes); no top process."""
    await node.spawn_service("counter", DistributedCounter, 0)
