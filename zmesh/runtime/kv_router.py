"""The node's partitioned stores by name, and the ``kv.*`` messages between nodes:
``kv.hello``, ``kv.handoff`` and ``kv.keys`` are requests; ``kv.batch`` (the reads,
writes, forwarded puts and their answers: see `kv_batch`), ``kv.repair``, ``kv.leave``
and ``kv.forget`` are casts. A malformed body raises DataError: a cast's
is counted as ``bad_data``, a request's as ``bad_requests``, and nothing changes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from zmesh.errors import ConfigError, DataError, ZmeshError
from zmesh.runtime.kv import KV
from zmesh.runtime.kv_batch import on_batch

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

__all__ = ["KVRouter"]


class KVRouter:
    """The node's stores by name, and the ``kv.*`` requests and casts between nodes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.stores: dict[str, KV] = {}
        self.counts: dict[str, int] = {}  # the last write count per store (see Writes.start)
        self._tasks: set[asyncio.Task[Any]] = set()
        dist = node._need_dist()
        for op, handler in (
            ("kv.hello", self._on_hello),
            ("kv.handoff", lambda s, kv, b: kv.vnodes.on_handoff(s, b)),
            ("kv.keys", lambda s, kv, b: kv.vnodes.on_keys(s, b)),
        ):
            dist.handle(op, self._route(op, handler))
        dist.handle_cast("kv.batch", self._route("kv.batch", on_batch, cast=True))
        dist.handle_cast("kv.repair", self._route("kv.repair", self._on_repair, cast=True))
        dist.handle_cast("kv.leave", self._route("kv.leave", self._on_leave, cast=True))
        dist.handle_cast("kv.forget", self._route("kv.forget", self._on_forget, cast=True))
        self._unsubscribe = node.subscribe_nodes(self._on_node_event)

    def _route(self, op: str, handler: Any, *, cast: bool = False) -> Any:
        def routed(sender: str, body: Any) -> Any:
            try:
                if type(body) is not list or not body or type(body[0]) is not str:
                    raise DataError(f"{op} from {sender} must start with the store's name")
                kv = self.stores.get(body[0])
                if kv is None:
                    if cast:
                        return None
                    raise ZmeshError(f"no store {body[0]!r} open on {self.node.name}")
                return handler(sender, kv, body[1:])
            except DataError as exc:
                if not cast:
                    raise  # the request layer refuses it, counted as bad_requests
                dist = self.node._dist
                if dist is not None:
                    dist.refuse("bad_data", f"{op} from {sender}: {exc}")
                return None

        return routed

    async def open(self, name: str, n: int, partitions: int, resolve: Any, timeout: float) -> KV:
        if type(name) is not str or not name:
            raise ConfigError(f"a store's name is a non-empty str, got {name!r}")
        for what, value in (("n", n), ("partitions", partitions)):
            if type(value) is not int or value < 1:
                raise ConfigError(f"{what} must be an int >= 1, got {value!r}")
        kv = self.stores.get(name)
        if kv is not None:
            if (kv.n, kv.partitions) != (n, partitions):
                raise ConfigError(
                    f"store {name!r} is open here with n={kv.n}, partitions={kv.partitions}"
                )
            return kv
        kv = self.stores[name] = KV(self, name, n, partitions, resolve, timeout)
        await asyncio.gather(*(self._hello(kv, peer) for peer in self.node.nodes()))
        return kv

    async def _hello(self, kv: KV, peer: str) -> None:
        try:
            answer = await kv.vnodes.request(peer, "kv.hello", [kv.n, kv.partitions], 5.0)
        except ZmeshError:
            return  # no such store there (or it is gone): not a member
        if answer is True and not kv.vnodes.closed:
            back = peer in kv.vnodes.known  # a member reachable again, not a new one
            kv.vnodes.add_member(peer)
            if back and self.node.name < peer:  # one side starts the exchange
                kv.sync.peer_up(peer)

    def _on_hello(self, sender: str, kv: KV, body: Any) -> bool:
        n, partitions = _fields2(body, sender)
        if (n, partitions) != (kv.n, kv.partitions):
            raise ZmeshError(
                f"store {kv.name!r} is open on {self.node.name} with n={kv.n}, "
                f"partitions={kv.partitions}, not n={n}, partitions={partitions}"
            )
        kv.vnodes.add_member(sender)
        return True

    def _on_repair(self, sender: str, kv: KV, body: Any) -> None:
        kv.vnodes.on_repair(sender, body)

    def _on_forget(self, sender: str, kv: KV, body: Any) -> None:
        if len(body) != 1 or type(body[0]) is not str:
            raise DataError(f"kv.forget from {sender} is [store, node], got {body!r}")
        if body[0] != self.node.name and body[0] not in self.node.nodes():
            kv.vnodes.remove_member(body[0])

    def _on_leave(self, sender: str, kv: KV, body: Any) -> None:
        kv.vnodes.remove_member(sender)

    def _on_node_event(self, event: str, name: str) -> None:
        for kv in self.stores.values():
            kv.vnodes.invalidate()
        if event != "up":
            for kv in self.stores.values():
                kv.fanout.on_down(name)
            return
        for kv in self.stores.values():
            task = asyncio.get_running_loop().create_task(self._hello(kv, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """The node is stopping: leave every store gracefully."""
        self._unsubscribe()
        for kv in list(self.stores.values()):
            kv.reaper.stop()
            try:
                await asyncio.wait_for(kv.vnodes.leave(), 10.0)
            except (TimeoutError, ZmeshError):
                kv.vnodes.stop()
            kv.fanout.stop()
        for task in list(self._tasks):
            task.cancel()
        self.stores.clear()


def _fields2(body: Any, sender: str) -> tuple[int, int]:
    if type(body) is not list or len(body) != 2 or any(type(x) is not int for x in body):
        raise DataError(f"kv.hello from {sender} is [name, n, partitions], got {body!r}")
    return body[0], body[1]
