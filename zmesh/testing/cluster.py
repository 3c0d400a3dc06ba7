"""`Cluster`: nodes "n1".."nN" in this process over real loopback tcp, with faults.

Faults act under the transport, so the nodes run their real code: a partition drops
every frame between two groups (heartbeats too), so both sides declare each other
down exactly as they would on a real network. Every node has all the others as seeds,
so after `heal()` (or `resume`, or `restart`) they find each other again the way a
static-seed cluster does; `settle()` waits for that.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from zmesh.runtime.config import NodeConfig
from zmesh.runtime.dist import Distribution
from zmesh.runtime.node import Node
from zmesh.testing.faults import LinkFaults

#: Fast failure detection and reconnection, so fault tests take seconds.
TEST_CONFIG = NodeConfig(tick=0.1, down_after=0.6, connect_timeout=1.0, seed_retry=0.2)


class SettleTimeout(AssertionError):
    """`settle()` ran out of time; the message lists each node's view and the expected one."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """An async context manager: `async with Cluster(3) as c: c["n1"].spawn(...)`.

    `node_options` go to every `Node` (e.g. `load=[...]`, `config=NodeConfig(...)`).
    Fault methods are coroutines; none waits for the cluster to react: `settle()` does.
    """

    def __init__(self, n: int, **node_options: Any) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got {n}")
        self.names = [f"n{i}" for i in range(1, n + 1)]
        self._options = node_options
        self._options.setdefault("config", TEST_CONFIG)
        self._options.setdefault("cookie", secrets.token_hex(8))
        self.addresses = {name: f"tcp://127.0.0.1:{_free_port()}" for name in self.names}
        self._nodes: dict[str, Node] = {}
        self._faults: dict[str, LinkFaults] = {}
        self._groups: list[set[str]] = [set(self.names)]
        self._dead: set[str] = set()
        self._paused: set[str] = set()
        self._seeds = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        try:
            for name in self.names:
                await self._start(name)
            await self.settle(timeout=10.0)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in reversed(self.names):
            node = self._nodes.get(name)
            if node is not None and name not in self._dead:
                if name in self._paused:
                    await node.abort()
                else:
                    await node.stop()
        self._nodes.clear()

    async def _start(self, name: str) -> Node:
        seeds = [a for other, a in self.addresses.items() if other != name]
        node = Node(name, listen=self.addresses[name], seeds=seeds, **self._options)
        await node.boot()
        faults = self._faults.get(name) or LinkFaults(seed=next(self._seeds))
        self._faults[name] = faults
        assert node._dist is not None and node._dist._transport is not None
        node._dist._transport.faults = faults
        self._nodes[name] = node
        self._dead.discard(name)
        self._paused.discard(name)
        return node

    # -- access --------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def __iter__(self) -> Iterator[Node]:
        return (self._nodes[n] for n in self.names if n in self._nodes)

    def live(self) -> list[str]:
        """Names of the nodes that are neither killed nor paused."""
        return [n for n in self.names if n not in self._dead and n not in self._paused]

    def reachable(self, a: str, b: str) -> bool:
        """Whether frames can currently pass between a and b (no partition between them)."""
        return any(a in g and b in g for g in self._groups)

    # -- faults ----------------------------------------------------------------------------------

    def _check(self, *names: str) -> None:
        for name in names:
            if name not in self.addresses:
                raise KeyError(f"no node {name!r} in this cluster (nodes: {self.names})")

    def _pairs(self) -> Iterator[tuple[str, str]]:
        return ((a, b) for a in self.names for b in self.names if a != b)

    async def partition(self, *groups: Iterable[str]) -> None:
        """Split the cluster: nothing crosses between groups, in either direction.
        Nodes named in no group form one more group together."""
        sets = [set(g) for g in groups]
        self._check(*(n for g in sets for n in g))
        rest = set(self.names).difference(*sets)
        self._groups = [g for g in [*sets, rest] if g]
        for a, b in self._pairs():
            if not self.reachable(a, b):
                self._faults[a].blocked.add(self.addresses[b])

    async def heal(self) -> None:
        """Remove every partition, drop rate and delay (nodes then reconnect by seeds)."""
        self._groups = [set(self.names)]
        for faults in self._faults.values():
            faults.clear()

    async def drop(self, a: str, b: str, rate: float) -> None:
        """Lose each frame between a and b (both directions) with probability `rate`."""
        self._check(a, b)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate!r}")
        self._faults[a].drop_rate[self.addresses[b]] = rate
        self._faults[b].drop_rate[self.addresses[a]] = rate

    async def delay(self, a: str, b: str, seconds: float) -> None:
        """Hold back each frame between a and b (both directions) by `seconds`, in order."""
        self._check(a, b)
        self._faults[a].delay[self.addresses[b]] = float(seconds)
        self._faults[b].delay[self.addresses[a]] = float(seconds)

    async def kill(self, name: str) -> None:
        """Abrupt death: no goodbye, its processes gone, its sockets closed."""
        self._check(name)
        if name not in self._dead:
            self._dead.add(name)
            self._paused.discard(name)
            await self._nodes[name].abort()

    async def pause(self, name: str) -> None:
        """Freeze the node like SIGSTOP: it neither reads, sends nor times anything out."""
        self._check(name)
        if name not in self._dead and name not in self._paused:
            self._paused.add(name)
            self._dist(name).pause()

    async def resume(self, name: str) -> None:
        """Undo `pause` (like SIGCONT)."""
        self._check(name)
        if name in self._paused:
            self._paused.discard(name)
            self._dist(name).resume()

    def _dist(self, name: str) -> Distribution:
        dist = self._nodes[name]._dist
        assert dist is not None  # every cluster node listens
        return dist

    async def restart(self, name: str) -> Node:
        """Kill the node if it lives, then start it again: same name and address, a new
        incarnation (its old pids are dead)."""
        self._check(name)
        await self.kill(name)
        return await self._start(name)

    # -- waiting ---------------------------------------------------------------------------------

    def expected_view(self, name: str) -> list[str]:
        """The peers `name` should see now: live nodes it can reach."""
        return sorted(m for m in self.live() if m != name and self.reachable(name, m))

    def _mismatches(self) -> dict[str, tuple[list[str], list[str]]]:
        out = {}
        for name in self.live():
            seen, want = self._nodes[name].nodes(), self.expected_view(name)
            if seen != want:
                out[name] = (seen, want)
        return out

    async def settle(self, timeout: float = 10.0) -> None:
        """Return once every live node's peers are exactly the live nodes it can reach;
        raise SettleTimeout naming each node's view and the expected one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            mismatches = self._mismatches()
            if not mismatches:
                return
            if loop.time() > deadline:
                detail = "; ".join(
                    f"{n} sees {s}, expected {w}" for n, (s, w) in mismatches.items()
                )
                raise SettleTimeout(f"cluster did not settle within {timeout} s: {detail}")
            await asyncio.sleep(0.02)
