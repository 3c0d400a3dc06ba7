"""Inspection: what `Node.info()` reports, and the probe that measures event-loop lag.

The `Inspector` is owned by its node (made at boot, stopped with it). It samples the
loop's lag, counts node up/down events and, when `NodeConfig.metrics_port` is set,
serves the Prometheus endpoint. The rows it builds are plain msgpack/JSON-able data,
so a peer can ask for them (`Node.node_info`) and the CLI can print them as they are.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from zmesh.core.ticks import until_next

if TYPE_CHECKING:
    from zmesh.runtime.node import Node
    from zmesh.runtime.process import Process

#: Upper bounds (seconds) of the lag and call-latency histogram buckets.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)
#: At most this many process rows in `info()`: the busiest (longest mailbox) when a node
#: runs more. `process_page` / `Node.node_processes` page through all of them.
INFO_PROCESS_ROWS = 1000


class Histogram:
    """Cumulative bucket counts and a sum, cheap to update (`observe` is a bisect)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last bucket is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of observations <= it) pairs, ending with "+Inf"."""
        out, total = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


class Inspector:
    """The node's observer: loop lag, event counts, call latency, the metrics endpoint."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.lag = 0.0  # the last sample, seconds
        self.lag_histogram = Histogram(LAG_BUCKETS)
        self.call_histogram = Histogram(CALL_BUCKETS)
        self.events: Counter[str] = Counter()
        self._metrics: _Stoppable | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Start the lag probe, follow node events, serve metrics if configured."""
        node = self.node
        self._task = asyncio.get_running_loop().create_task(self._probe())
        if node.address is not None:
            self._unsubscribe = node.subscribe_nodes(self._on_node_event)
        if node._dist is not None:
            budget = node.config.max_message_size // 2
            node._dist.handle("processes", lambda sender, body: process_page(node, body, budget))
        if node.config.metrics_port is not None:
            # Only the metrics endpoint reads call latency: without it, calls do not pay
            # for timing themselves (0.2 us of a 6 us local call).
            node._call_latency = self.call_histogram
            from zmesh.runtime.metrics import serve_metrics

            try:
                self._metrics = await serve_metrics(node, self, node.config.metrics_port)
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        """Stop everything `start` started; idempotent."""
        self.node._call_latency = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def metrics_address(self) -> str | None:
        """The "http://host:port/metrics" served, or None."""
        return getattr(self._metrics, "url", None)

    def stats(self) -> dict[str, int]:
        """The node's counters (`Node.stats()`) and this inspector's event counts."""
        return {**self.node.stats(), **self.events}

    def uptime(self) -> float:
        """Seconds since the node was made (its incarnation is its start time in ms)."""
        return max(self.node.env.wall_time() - self.node.creation / 1000.0, 0.0)

    def peer_traffic(self) -> dict[str, dict[str, int]]:
        """Per-peer message, byte and frame counts, keyed by peer name (`peer_stats`)."""
        return self.node.peer_stats()

    def _on_node_event(self, event: str, name: str) -> None:
        self.events[f"node_{event}"] += 1

    async def _probe(self) -> None:
        """Every other `tick`, on the node's timer grid (with the tick loop: no wake-up
        of its own), the loop is asked to wake; the lateness of the wake-up is the lag."""
        loop = asyncio.get_running_loop()
        period = 2 * self.node.config.tick
        while True:
            now = loop.time()
            delay = until_next(now, period)
            due = now + delay
            await asyncio.sleep(delay)
            self.lag = max(loop.time() - due, 0.0)
            self.lag_histogram.observe(self.lag)

    def info(self) -> dict[str, Any]:
        """The snapshot `Node.info()` returns (keys documented in docs/cli.md)."""
        node = self.node
        registry = node._registry
        dist = node._dist
        addresses = {}
        if dist is not None:
            for name in node.nodes():
                peer = dist.peer(name)
                if peer is not None:
                    addresses[name] = peer.address
        ring = node._ring.ring if node._ring is not None else None
        return {
            "name": node.name,
            "address": node.advertised,  # what peers dial; "bound" is the socket's own
            "bound": node.address,
            "creation": node.creation,
            "hidden": node.hidden,
            "os_pid": os.getpid(),
            "python": sys.version.split()[0],
            "uptime": self.uptime(),
            "memory": memory_bytes(),
            "loop_lag": self.lag,
            "nodes": node.nodes(),
            "peer_addresses": addresses,
            "processes": list(process_rows(node, busiest(node._listed(), INFO_PROCESS_ROWS))),
            "registered": registry.registered() if registry is not None else [],
            "ring": (
                {"weights": ring.weights, "vnodes": ring.vnodes} if ring is not None else None
            ),
            "stats": self.stats(),
            "traffic": self.peer_traffic(),
            "metrics": self.metrics_address,
            "services": node._svc.rows() if node._svc is not None else [],
        }


def busiest(procs: list[Process], limit: int) -> list[Process]:
    """`procs` if there are at most `limit`, else the `limit` with the longest mailboxes,
    in their original order."""
    if len(procs) <= limit:
        return procs
    keep = {id(p) for p in heapq.nlargest(limit, procs, key=lambda p: p.pending())}
    return [p for p in procs if id(p) in keep]


def process_page(node: Node, body: Any, budget: int) -> dict[str, Any]:
    """The rows of the listed processes from index `body` on, as many as fit in about
    `budget` bytes (at least one): {"rows", "next" (index, or None at the end), "total"}."""
    if type(body) is not int or body < 0:
        raise TypeError(f"a process page starts at an index >= 0, not {body!r}")
    procs = node._listed()
    rows: list[dict[str, Any]] = []
    size = 0
    index = body
    for row in process_rows(node, procs[body:]):  # made one by one: only the page's
        size += len(msgpack.packb(row))
        if rows and size > budget:
            break
        rows.append(row)
        index += 1
    return {"rows": rows, "next": index if index < len(procs) else None, "total": len(procs)}


async def all_process_rows(node: Node, target: str, timeout: float | None) -> list[dict[str, Any]]:
    """Every process row of node `target`, asked for page by page (see `process_page`)."""
    if target == node.name:
        return list(process_rows(node, node._listed()))
    dist = node._need_dist()
    rows: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = await dist.request(target, "processes", start, timeout)
        rows += page["rows"]
        start = page["next"]
    return rows


def process_rows(node: Node, procs: list[Process]) -> Iterator[dict[str, Any]]:
    """One row per process of `procs`, made as it is taken: node, pid, name, function,
    messages (queued), received (delivered so far), links, monitors (held),
    monitored_by."""
    names: dict[Any, str] = {}
    for name in node.registered():
        pid = node.whereis(name)
        if pid is not None and pid.node == node.name:
            names.setdefault(pid, name)
    me = node.name
    for proc in procs:
        pid = proc.pid
        yield {
            "node": me,
            "pid": str(pid),
            "name": names.get(pid),
            "function": describe(proc),
            "messages": proc.pending(),
            "received": proc.received,
            "links": len(proc.links) if proc.links else 0,
            "monitors": len(proc.monitors) if proc.monitors else 0,
            "monitored_by": len(proc.watchers) if proc.watchers else 0,
        }


def describe(proc: Process) -> str:
    """ "module:qualname" of the function a process runs, or of its GenServer class;
    "(mailbox)" for a `node.process()` block, which has no task of its own."""
    task = proc._task
    if task is None:
        return "(mailbox)"
    coro: Any = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    if frame is None:
        return getattr(coro, "__qualname__", "?")
    module = frame.f_globals.get("__name__", "?")
    if module.startswith("zmesh.runtime."):
        # zmesh's wrappers keep the user's GenServer class in the local `cls`, a named
        # supervised function in `fn`, a service's server in `server`.
        local = frame.f_locals
        target = local.get("cls") or local.get("fn") or local.get("server")
        if callable(target) and hasattr(target, "__qualname__"):
            return f"{target.__module__}:{target.__qualname__}"
    return f"{module}:{coro.__qualname__}"


def memory_bytes() -> int:
    """This OS process's resident memory, bytes (peak RSS where /proc is missing)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
