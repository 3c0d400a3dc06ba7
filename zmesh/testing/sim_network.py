"""An in-memory network with the ZeroMQ transport's interface, for deterministic simulation.

`SimNetwork` stands for every wire between the simulated nodes. Each node's
`SimTransport` binds a `sim://NAME` address (its ROUTER) and opens one `SimLink` per
peer address (its DEALER), exactly as `ZmqTransport` does, and the node above runs its
real code on it. What the network guarantees is what ZeroMQ over TCP guarantees:

- per link, frames arrive in the order sent, never duplicated; frames of different
  links interleave freely;
- a frame's flight time is a per-link base latency plus jitter, both drawn from the
  network's seeded random source, plus any delay a fault adds;
- a link to an address nobody has bound keeps its frames (a DEALER's pipe) and hands
  them over when a node binds it; a link whose peer's transport closes (killed) is
  reported lost to its node, as the socket monitor reports a closed connection, and
  frames still in flight to the dead transport are lost;
- a paused transport reads and sends nothing; what arrives meanwhile waits for `resume`.

Every send, drop, delivery and loss is folded into a trace (`Trace`), so two runs can
be compared bit for bit by one digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from typing import Any

from zmesh.core.protocol import frame
from zmesh.core.spin import Awaits
from zmesh.errors import ConfigError, QueueFull
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.transport import Faults, FrameHandler, LostHandler

#: Base one-way latency of a link is drawn from this range (seconds); each frame adds up
#: to as much again as jitter.
LATENCY = (50e-6, 500e-6)
#: How long after a transport closes its peers' links hear of it (a socket monitor event).
LOSS_NOTICE = 50e-6


class Trace:
    """The event log of one simulation: a running hash, and the last events as text."""

    def __init__(self, keep: int = 200) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.events = 0
        self.recent: deque[str] = deque(maxlen=keep)

    def record(self, now: float, what: str, data: bytes = b"") -> None:
        """Fold one event (its virtual time, a description and any payload) into the log."""
        line = f"{now!r} {what}"
        self._hash.update(line.encode())
        self._hash.update(len(data).to_bytes(4, "big"))
        self._hash.update(data)
        self.events += 1
        self.recent.append(line)

    def digest(self) -> str:
        """The hash of every event so far, as hex."""
        return self._hash.hexdigest()


class SimNetwork:
    """Every simulated wire of one simulation, its seeded randomness and its trace."""

    def __init__(self, seed: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.random = random.Random(f"zmesh-network:{seed}")
        self.trace = Trace()
        self._bound: dict[str, SimTransport] = {}
        self._links: dict[str, list[SimLink]] = {}  # by the address they dial
        self._latency: dict[tuple[str, str], float] = {}

    def bound(self, address: str) -> SimTransport | None:
        """The live transport bound at `address`, if any."""
        return self._bound.get(address)

    def _bind(self, transport: SimTransport, address: str) -> None:
        if address in self._bound:
            raise ConfigError(f"cannot listen on {address!r}: already bound")
        if not address.startswith("sim://"):
            raise ConfigError(f"a simulated node listens on sim://NAME, got {address!r}")
        self._bound[address] = transport
        self.trace.record(self.loop.time(), f"bind {address}")
        for link in self._links.get(address, []):
            link._connect(transport)

    def _unbind(self, transport: SimTransport) -> None:
        address = transport.address
        if self._bound.get(address) is not transport:
            return
        del self._bound[address]
        self.trace.record(self.loop.time(), f"unbind {address}")
        for link in self._links.get(address, []):
            if link._peer is transport:
                link._peer = None
                self.loop.call_later(LOSS_NOTICE, link._lost)

    def _register(self, link: SimLink) -> None:
        self._links.setdefault(link.address, []).append(link)
        peer = self._bound.get(link.address)
        if peer is not None:
            link._connect(peer)

    def _forget(self, link: SimLink) -> None:
        links = self._links.get(link.address, [])
        if link in links:
            links.remove(link)

    def latency(self, src: str, dst: str) -> float:
        """One frame's flight time from `src` to `dst`: the link's base plus jitter."""
        key = (src, dst)
        base = self._latency.get(key)
        if base is None:
            base = self._latency[key] = self.random.uniform(*LATENCY)
        return base + self.random.uniform(0.0, base)


class SimTransport:
    """One node's ROUTER and DEALERs on a `SimNetwork` (the `Transport` interface)."""

    def __init__(
        self,
        network: SimNetwork,
        config: NodeConfig,
        on_frame: FrameHandler,
        on_lost: LostHandler,
        **options: Any,
    ) -> None:
        if options.get("keys") is not None:
            raise ConfigError("CurveZMQ is not simulated: run the simulation without curve=")
        self.network = network
        self.config = config
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._loop = network.loop
        self.address = ""
        self.faults: Faults | None = None
        self.closed = False
        self._paused = False
        self._inbox: deque[tuple[bytes, bytes]] = deque()
        self._links: list[SimLink] = []
        self._dirty: list[SimLink] = []
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"<SimTransport {self.address or 'unbound'}>"

    def bind(self, listen: str) -> str:
        """Take the address `listen` (sim://NAME); peers' links to it connect now."""
        self.network._bind(self, listen)
        self.address = listen
        return listen

    def open(self, address: str, server_key: bytes | None = None) -> SimLink:
        """A new link to `address`, with a fresh identity from the network's random source."""
        if server_key is not None:
            raise ConfigError("CurveZMQ is not simulated: a link takes no server key")
        link = SimLink(self, address)
        self._links.append(link)
        self.network._register(link)
        return link

    def pause(self) -> None:
        """Read and send nothing until `resume` (what arrives meanwhile waits)."""
        self._paused = True

    def resume(self) -> None:
        """Hand over what arrived while paused, in order, and send what was held."""
        if not self._paused:
            return
        self._paused = False
        self._loop.call_soon(self._drain)
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def close(self, linger: float = 0.0) -> None:
        """Close every link and give up the address; peers' links see it lost."""
        if self.closed:
            return
        if linger and not self._paused:
            self._flush()
        self.closed = True
        for link in list(self._links):
            link.close()
        self._inbox.clear()
        self.network._unbind(self)

    # -- frames ------------------------------------------------------------------------

    def _mark_dirty(self, link: SimLink) -> None:
        self._dirty.append(link)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._paused or self.closed:
            return
        dirty, self._dirty = self._dirty, []
        now = self._loop.time()
        for link in dirty:
            link._flush(now)

    def _arrive(self, identity: bytes, data: bytes) -> None:
        if self.closed:
            return
        if self._paused or self._inbox:
            self._inbox.append((identity, data))
            return
        self._on_frame(identity, [data], None)

    def _drain(self) -> None:
        while self._inbox and not self._paused and not self.closed:
            identity, data = self._inbox.popleft()
            self._on_frame(identity, [data], None)


class SimLink:
    """A DEALER: frames queued here reach the transport bound at `address`, in order."""

    def __init__(self, transport: SimTransport, address: str) -> None:
        network = transport.network
        self.address = address
        self.closed = False
        self.last_flush = 0.0
        self.frames_out = 0
        self.bytes_out = 0
        self.identity = b"\x01" + network.random.randbytes(15)
        # How the trace names this link: both ends and the start of its identity.
        self._route = f"{transport.address}->{address} {self.identity[1:4].hex()}"
        self._transport = transport
        self._network = network
        self._loop = network.loop
        self._outbox: list[bytes] = []
        self._queued = 0
        self._seq = 0
        self._dirty = False
        self._peer: SimTransport | None = None  # the transport it is connected to
        self._pending: deque[bytes] = deque()  # frames waiting for a connection
        self._last_arrival = 0.0  # per-link FIFO: no frame lands before the one ahead
        self._flying: deque[tuple[SimTransport, bytes]] = deque()  # in send order

    def __repr__(self) -> str:
        return f"<SimLink {self._transport.address}->{self.address} seq={self._seq}>"

    def enqueue(self, envelope: bytes, urgent: bool = True, awaits: Awaits = "maybe") -> None:
        """Queue `envelope` for the next frame; QueueFull when too much is queued (no
        spin here: `awaits` is for a real socket's busy-poll)."""
        if self.closed:
            return
        if self._queued > self._transport.config.max_outbox_bytes:
            raise QueueFull(
                f"{self._queued} bytes already queued for {self.address}: the peer is not reading"
            )
        self._outbox.append(envelope)
        self._queued += len(envelope)
        if not self._dirty:
            self._dirty = True
            self._transport._mark_dirty(self)

    def poll(self) -> None:
        """Nothing to poll: losses are reported as they happen."""

    def close(self, linger: float = 0.0) -> None:
        """Close the link; with `linger`, what is queued still leaves (as ZeroMQ's)."""
        if self.closed:
            return
        if linger and not self._transport._paused:
            self._flush(self._loop.time())
        self.closed = True
        self._outbox.clear()
        self._pending.clear()
        self._network._forget(self)
        if self in self._transport._links:
            self._transport._links.remove(self)

    # -- internals ---------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        self._dirty = False
        if self.closed or not self._outbox:
            return
        self.last_flush = now
        outbox, self._outbox = self._outbox, []
        self._queued = 0
        limit = self._transport.config.batch_bytes
        start, size = 0, 0
        for i, env in enumerate(outbox):
            size += len(env)
            if size >= limit or i == len(outbox) - 1:
                self._send(frame(outbox[start : i + 1], self._seq), now)
                self._seq += 1
                start, size = i + 1, 0

    def _send(self, data: bytes, now: float) -> None:
        faults = self._transport.faults
        action = faults.action(self.address) if faults is not None else None
        trace = self._network.trace
        route = self._route
        if action == "drop":
            trace.record(now, f"drop {route}", data)
            return
        self.frames_out += 1
        self.bytes_out += len(data)
        extra = float(action) if isinstance(action, float | int) else 0.0
        if self._peer is None:
            if len(self._pending) < self._transport.config.hwm:
                self._pending.append(data)
                trace.record(now, f"queue {route}", data)
            else:
                trace.record(now, f"overflow {route}", data)
            return
        self._fly(self._peer, data, now, extra)

    def _fly(self, peer: SimTransport, data: bytes, now: float, extra: float = 0.0) -> None:
        flight = self._network.latency(self._transport.address, self.address) + extra
        arrival = max(now + flight, self._last_arrival)
        self._last_arrival = arrival
        self._network.trace.record(now, f"send {self._route}", data)
        self._flying.append((peer, data))
        self._loop.call_at(arrival, self._land)

    def _land(self) -> None:
        # Frames due at the same instant have equal timers, which the loop's heap may
        # fire in any order: each landing takes the oldest frame in flight (FIFO).
        peer, data = self._flying.popleft()
        route = self._route
        now = self._loop.time()
        if peer.closed:
            self._network.trace.record(now, f"lost {route}", data)
            return
        self._network.trace.record(now, f"land {route}")
        peer._arrive(self.identity, data)

    def _connect(self, peer: SimTransport) -> None:
        self._peer = peer
        now = self._loop.time()
        while self._pending and not self.closed:
            self._fly(peer, self._pending.popleft(), now)

    def _lost(self) -> None:
        if not self.closed and not self._transport.closed:
            self._network.trace.record(self._loop.time(), f"disconnected {self!r}")
            self._transport._on_lost(self)
