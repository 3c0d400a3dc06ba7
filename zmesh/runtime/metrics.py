"""Prometheus metrics: `NodeConfig(metrics_port=...)` serves http://HOST:PORT/metrics.

The endpoint is a tiny HTTP/1.0 server on the node's own event loop: a scrape reads the
node's counters between two events, so it needs no lock and sees a consistent snapshot.
The figures are collected at scrape time from what the node already counts; only the
histograms (call latency, loop lag) are fed as things happen (see `Inspector`).
Needs prometheus-client (`pip install zmesh[metrics]`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zmesh.errors import ConfigError
from zmesh.runtime.inspect import memory_bytes

if TYPE_CHECKING:
    from zmesh.runtime.inspect import Histogram, Inspector
    from zmesh.runtime.node import Node

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - exercised only without the extra
    Collector = object  # type: ignore[assignment,misc]
    _MISSING = True
else:
    _MISSING = False

#: Node counters (`Node.stats()`) that count refused handshakes, by reason.
HANDSHAKE_REASONS = frozenset(
    {
        "bad_cookies",
        "name_clashes",
        "refused_handshakes",
        "bad_handshakes",
        "unexpected_handshakes",
        "handshakes_expired",
        "unauthenticated",
    }
)
#: Node counters that count refused frames and envelopes, by reason.
FRAME_REASONS = frozenset(
    {
        "bad_frames",
        "bad_frame_count",
        "frame_gaps",
        "bad_envelopes",
        "unexpected_envelopes",
        "bad_payloads",
    }
)
#: Node counters that are gauges or have a metric of their own.
_OWN = frozenset(
    {"processes", "peers", "node_up", "node_down", "supervisor_restarts", "connections_lost",
     "heartbeat_timeouts"}
)  # fmt: skip
_PEER_COUNTERS = (
    ("messages", "zmesh_peer_messages_total", "Messages sent to / received from a peer."),
    ("bytes", "zmesh_peer_bytes_total", "Frame bytes sent to / received from a peer."),
    ("frames", "zmesh_peer_frames_total", "Frames (batches of envelopes) to / from a peer."),
)


class NodeCollector(Collector):
    """Yields the node's metric families at scrape time."""

    def __init__(self, node: Node, inspector: Inspector) -> None:
        self.node = node
        self.inspector = inspector

    def collect(self) -> Iterator[Any]:
        node, labels = self.node, [self.node.name]
        stats = self.inspector.stats()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["node"])
            family.add_metric(labels, value)
            return family

        yield gauge("zmesh_processes", "Live processes on the node.", stats.get("processes", 0))
        rows = node._listed()
        yield gauge(
            "zmesh_mailbox_backlog", "Messages queued in all mailboxes.",
            sum(p.pending() for p in rows),
        )  # fmt: skip
        yield gauge("zmesh_peers", "Connected peers.", stats.get("peers", 0))
        names = len(node.registered())
        yield gauge("zmesh_registered_names", "Names in the global registry.", names)
        uptime = self.inspector.uptime()
        yield gauge("zmesh_uptime_seconds", "Seconds since the node started.", uptime)
        yield gauge("zmesh_memory_bytes", "Resident memory of the OS process.", memory_bytes())

        events = CounterMetricFamily(
            "zmesh_node_events", "Peers seen up or down.", labels=["node", "event"]
        )
        for event in ("up", "down"):
            events.add_metric([*labels, event], stats.get(f"node_{event}", 0))
        yield events
        lost = CounterMetricFamily(
            "zmesh_connections_lost", "Peers lost, by how it was found.", labels=["node", "how"]
        )
        lost.add_metric([*labels, "socket"], stats.get("connections_lost", 0))
        lost.add_metric([*labels, "heartbeat"], stats.get("heartbeat_timeouts", 0))
        yield lost
        restarts = CounterMetricFamily(
            "zmesh_supervisor_restarts", "Children restarted by supervisors.", labels=["node"]
        )
        restarts.add_metric(labels, stats.get("supervisor_restarts", 0))
        yield restarts
        yield _by_reason(
            "zmesh_handshakes_refused", "Refused handshakes, by reason.", labels,
            {k: v for k, v in stats.items() if k in HANDSHAKE_REASONS},
        )  # fmt: skip
        yield _by_reason(
            "zmesh_frames_refused", "Refused frames and envelopes, by reason.", labels,
            {k: v for k, v in stats.items() if k in FRAME_REASONS},
        )  # fmt: skip
        yield _by_kind(
            "zmesh_registry_operations", "Registry operations on this node's names, by op.",
            labels, "op", {k[9:]: v for k, v in stats.items() if k.startswith("registry_")},
        )  # fmt: skip
        yield gauge("zmesh_services", "Services in the cluster (this replica).",
                    stats.get("services", 0))  # fmt: skip
        yield gauge("zmesh_services_here", "Service instances running on this node.",
                    stats.get("services_here", 0))  # fmt: skip
        yield _by_kind(
            "zmesh_service_events", "Service moves, messages held and dropped, by kind.",
            labels, "kind", {k[8:]: v for k, v in stats.items() if k.startswith("service_")},
        )  # fmt: skip
        other = {
            k: v for k, v in stats.items()
            if k not in HANDSHAKE_REASONS and k not in FRAME_REASONS and k not in _OWN
            and not k.startswith(("registry_", "service"))
        }  # fmt: skip
        if other:
            yield _by_reason("zmesh_events", "Other node counters, by kind.", labels, other)
        yield from _peer_families(self.inspector.peer_traffic(), labels)
        yield _histogram(
            "zmesh_call_latency_seconds", "GenServer call latency seen by callers here.",
            labels, self.inspector.call_histogram,
        )  # fmt: skip
        yield _histogram(
            "zmesh_loop_lag_seconds", "Event-loop lag (late wake-ups of a periodic probe).",
            labels, self.inspector.lag_histogram,
        )  # fmt: skip


def _by_reason(name: str, doc: str, labels: list[str], counts: dict[str, int]) -> Any:
    return _by_kind(name, doc, labels, "reason", counts)


def _by_kind(name: str, doc: str, labels: list[str], label: str, counts: dict[str, int]) -> Any:
    family = CounterMetricFamily(name, doc, labels=["node", label])
    for kind, count in sorted(counts.items()):
        family.add_metric([*labels, kind], count)
    return family


def _peer_families(peers: dict[str, dict[str, int]], labels: list[str]) -> Iterator[Any]:
    for key, name, doc in _PEER_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["node", "peer", "direction"])
        for peer, counts in sorted(peers.items()):
            for direction in ("in", "out"):
                family.add_metric([*labels, peer, direction], counts.get(f"{key}_{direction}", 0))
        yield family
    ratio = GaugeMetricFamily(
        "zmesh_peer_envelopes_per_frame", "Envelopes per received frame (batching), per peer.",
        labels=["node", "peer"],
    )  # fmt: skip
    for peer, counts in sorted(peers.items()):
        frames = counts.get("frames_in", 0)
        ratio.add_metric([*labels, peer], counts.get("envelopes_in", 0) / frames if frames else 0)
    yield ratio


def _histogram(name: str, doc: str, labels: list[str], hist: Histogram) -> Any:
    family = HistogramMetricFamily(name, doc, labels=["node"])
    family.add_metric(labels, hist.cumulative(), hist.sum)
    return family


class MetricsServer:
    """The /metrics endpoint; `stop()` closes it."""

    def __init__(self, server: asyncio.Server, registry: Any) -> None:
        self._server = server
        self._registry = registry
        host, port = server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}/metrics"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = request.split(b" ", 2)
            if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") and parts[1] == b"/metrics":
                body = generate_latest(self._registry)
                head = b"200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"
            else:
                body = b"not found: try /metrics\n"
                head = b"404 Not Found\r\nContent-Type: text/plain"
            writer.write(b"HTTP/1.0 " + head + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            if parts[0] != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def serve_metrics(node: Node, inspector: Inspector, port: int) -> MetricsServer:
    """Bind the endpoint; raises ConfigError if prometheus-client is missing or the
    port cannot be bound."""
    if _MISSING:
        raise ConfigError("metrics_port needs prometheus-client: pip install 'zmesh[metrics]'")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, inspector))
    holder: list[MetricsServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0].handle(reader, writer)

    host = node.config.metrics_host
    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    holder.append(MetricsServer(server, registry))
    return holder[0]
