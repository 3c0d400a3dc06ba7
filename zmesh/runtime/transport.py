"""ZeroMQ transport: one ROUTER bound for inbound frames, one DEALER per peer outbound.

Sockets are driven from the event loop with `add_reader` on their ZMQ_FD: no thread
per socket and no await per message. Envelopes queued for a peer during one loop
iteration are coalesced into one frame at the end of it, so a busy node sends few
large frames and an idle one sends each envelope at once.

ZMQ_FD is edge-triggered: after every drain the socket's ZMQ_EVENTS is re-checked
instead of waiting for the descriptor to fire again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from zmesh.core.protocol import frame
from zmesh.errors import ConfigError, QueueFull
from zmesh.runtime.config import NodeConfig

log = logging.getLogger("zmesh.transport")

FrameHandler = Callable[[bytes, list[bytes]], None]
LostHandler = Callable[["OutLink"], None]

# Frames drained per wake-up before yielding to other tasks (fairness vs. wake-up cost).
_RECV_BUDGET = 2000
# Frames above this are sent without a copy; small ones are cheaper to copy.
_ZERO_COPY_BYTES = 64 * 1024


class OutLink(Protocol):
    """An outbound channel to one peer; envelopes queued on it arrive in order."""

    address: str
    closed: bool
    last_flush: float
    frames_out: int  # frames handed to the socket (batches), and their bytes
    bytes_out: int

    def poll(self) -> None: ...

    def enqueue(self, envelope: bytes, urgent: bool = True) -> None: ...
    def close(self, linger: float = 0.0) -> None: ...


class Faults(Protocol):
    """Fault injection under the transport (see zmesh.testing): what happens to the next
    outbound frame for the peer at `address`: None (send it), "drop", or a delay in
    seconds. Asked once per frame (a frame may carry several envelopes)."""

    def action(self, address: str) -> str | float | None: ...


class Transport(Protocol):
    """What a node needs from the network; a test harness may wrap it to inject faults."""

    address: str

    def open(self, address: str) -> OutLink: ...
    async def close(self, linger: float = 0.0) -> None: ...


class ZmqTransport:
    """The ROUTER/DEALER transport over tcp:// or ipc://."""

    def __init__(
        self,
        config: NodeConfig,
        on_frame: FrameHandler,
        on_lost: LostHandler,
    ) -> None:
        self._config = config
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context(io_threads=1)
        self._router: zmq.Socket[bytes] | None = None
        self._links: set[ZmqLink] = set()
        self._dirty: list[ZmqLink] = []
        self._flush_scheduled = False
        self._drain_scheduled = False
        self._paused = False
        #: Set by a test harness to drop or delay outbound frames; None in production.
        self.faults: Faults | None = None
        self.address = ""

    # -- inbound ------------------------------------------------------------------------

    def bind(self, listen: str) -> str:
        """Bind the ROUTER at `listen`; return the bound endpoint (port 0 resolved)."""
        router = self._ctx.socket(zmq.ROUTER)
        cfg = self._config
        router.setsockopt(zmq.LINGER, 0)  # never block close on a dead peer
        # A frame over the limit disconnects its sender before it is buffered (a peer
        # declaring a 1 GiB frame otherwise reserves 1 GiB).
        router.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_size + 65536)
        router.setsockopt(zmq.RCVHWM, cfg.hwm)
        # A silent raw TCP client is dropped after 2 s instead of ZMQ's default 30 s.
        router.setsockopt(zmq.HANDSHAKE_IVL, 2000)
        # Handover stays off (the default): identities are random per connection, so a
        # second connection presenting a live identity is a guess or a replay, not a restart.
        router.setsockopt(zmq.ROUTER_HANDOVER, 0)
        router.setsockopt(zmq.TCP_KEEPALIVE, 1)
        _set_zmtp_heartbeat(router, cfg)
        try:
            router.bind(listen)
        except zmq.ZMQError as exc:
            router.close(0)
            raise ConfigError(f"cannot listen on {listen!r}: {exc}") from None
        self._router = router
        self.address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._loop.add_reader(_fd(router), self._drain)
        self._loop.call_soon(self._drain)  # edge-triggered: catch what arrived before
        return self.address

    def pause(self) -> None:
        """Stop reading and sending, as if the process were stopped (a test fault)."""
        if not self._paused and self._router is not None:
            self._paused = True
            self._loop.remove_reader(_fd(self._router))

    def resume(self) -> None:
        """Undo `pause`: read what queued up meanwhile and send what was held back."""
        if self._paused and self._router is not None:
            self._paused = False
            self._loop.add_reader(_fd(self._router), self._drain)
            self._loop.call_soon(self._drain)
            if self._dirty and not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    def _drain(self) -> None:
        self._drain_scheduled = False
        router = self._router
        if router is None or self._paused:
            return
        on_frame = self._on_frame
        for _ in range(_RECV_BUDGET):
            try:
                parts = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("router receive failed: %s", exc)
                return
            identity = parts.pop(0)
            try:
                on_frame(identity, parts)
            except Exception:
                log.exception("inbound frame handler failed")
            # Cheaper than the zmq.Again that the next receive would raise, and it
            # re-arms the edge-triggered descriptor just as well.
            if not int(router.get(zmq.EVENTS)) & zmq.POLLIN:
                return
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    # -- outbound -----------------------------------------------------------------------

    def open(self, address: str) -> ZmqLink:
        """A new DEALER connected to `address` with a fresh random identity."""
        link = ZmqLink(self, address)
        self._links.add(link)
        return link

    def _mark_dirty(self, link: ZmqLink) -> None:
        self._dirty.append(link)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._paused:
            return  # held in the outboxes until resume()
        dirty, self._dirty = self._dirty, []
        now = self._loop.time()
        for link in dirty:
            link._flush(now)

    async def close(self, linger: float = 0.0) -> None:
        """Close every socket and the context; queued frames get `linger` seconds to leave."""
        for link in list(self._links):
            link.close(linger)
        if self._router is not None:
            self._loop.remove_reader(_fd(self._router))
            self._router.close(0)
            self._router = None
        # term() waits for lingering sockets: keep it off the event loop.
        await self._loop.run_in_executor(None, self._ctx.term)


class ZmqLink:
    """A DEALER to one peer, with its outbox, batching and disconnect monitor."""

    def __init__(self, transport: ZmqTransport, address: str) -> None:
        self.address = address
        self.closed = False
        self.last_flush = 0.0
        self.frames_out = 0
        self.bytes_out = 0
        self._transport = transport
        self._loop = transport._loop
        cfg = transport._config
        self._max_bytes = cfg.max_outbox_bytes
        self._batch_bytes = cfg.batch_bytes
        self._outbox: list[bytes] = []
        self._seq = 0  # frames numbered from 0: the receiver detects a lost one
        # Frames (with the envelope bytes they carry) that ZeroMQ has not taken yet (HWM).
        self._blocked: deque[tuple[bytes, int]] = deque()
        # Frames a fault delays: (release time, frame, envelope bytes), in send order.
        self._held: deque[tuple[float, bytes, int]] = deque()
        self._release_timer: asyncio.TimerHandle | None = None
        self._queued = 0
        self._dirty = False  # a flush is due at the end of this loop iteration
        self._sent = False  # a frame already left in this loop iteration
        self._watching = False
        sock = transport._ctx.socket(zmq.DEALER)
        # A leading zero byte is reserved by ZeroMQ for generated identities.
        sock.setsockopt(zmq.ROUTING_ID, b"\x01" + os.urandom(15))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, cfg.hwm)
        # Retry an absent peer with backoff rather than every 100 ms forever.
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        _set_zmtp_heartbeat(sock, cfg)
        self._sock = sock
        self._fd = _fd(sock)
        # The socket monitor reports a closed TCP connection at once: a killed peer is
        # seen down in milliseconds, not after the heartbeat timeout.
        self._monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._monitor_fd = _fd(self._monitor)
        self._was_connected = False
        self._loop.add_reader(self._monitor_fd, self._on_monitor)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"cannot connect to {address!r}: {exc}") from None
        # Edge-triggered: libzmq may have consumed the monitor's wake-up while wiring the
        # inproc pair, and it would never fire again. Look once now (see also poll()).
        self._loop.call_soon(self._on_monitor)

    def __repr__(self) -> str:
        return f"<ZmqLink {self.address} queued={self._queued}>"

    def enqueue(self, envelope: bytes, urgent: bool = True) -> None:
        """Queue `envelope`; raise QueueFull when the peer is this far behind.

        The first urgent envelope (a message) of a loop iteration leaves at once, with
        the signals queued before it; anything else waits for the end of the iteration
        and shares a frame with what follows.
        """
        if self.closed:
            return
        if self._queued > self._max_bytes:
            raise QueueFull(
                f"{self._queued} bytes already queued for {self.address}: the peer is not reading"
            )
        if not self._dirty:
            self._dirty = True
            self._transport._mark_dirty(self)
        transport = self._transport
        if (
            urgent
            and not self._sent
            and not self._blocked
            and not transport._paused
            and transport.faults is None
            and not self._held
            and self._queued < self._batch_bytes  # the outbox fits in one frame
        ):
            # A round trip does not wait a loop iteration per hop (a call's monitor
            # rides with its request); what follows in the same iteration is coalesced.
            self._sent = True
            outbox = self._outbox
            data = frame([*outbox, envelope], self._seq)
            try:
                self._sock.send(data, zmq.NOBLOCK)
            except zmq.Again:
                pass
            else:
                self._seq += 1
                self.frames_out += 1
                self.bytes_out += len(data)
                if outbox:
                    self._queued -= sum(map(len, outbox))
                    self._outbox = []
                return
        self._outbox.append(envelope)
        self._queued += len(envelope)

    def _flush(self, now: float) -> None:
        self._dirty = self._sent = False
        if self.closed:
            return
        self.last_flush = now
        outbox = self._outbox
        if outbox:
            self._outbox = []
            cut: list[tuple[bytes, int]] = []
            limit = self._batch_bytes
            start, size = 0, 0
            for i, env in enumerate(outbox):
                size += len(env)
                if size >= limit:
                    cut.append((frame(outbox[start : i + 1], self._seq), size))
                    self._seq += 1
                    start, size = i + 1, 0
            if start < len(outbox):
                cut.append((frame(outbox[start:], self._seq), size))
                self._seq += 1
            if self._transport.faults is None and not self._held:
                self._blocked.extend(cut)
            else:
                self._apply_faults(cut, now)
        self._send_blocked()

    def _apply_faults(self, cut: list[tuple[bytes, int]], now: float) -> None:
        """Drop or hold back the frames cut by this flush as the harness's faults say.

        Each frame is judged once. Order is kept: while any frame is held back, every
        later frame waits behind it, even one the faults would let pass.
        """
        faults = self._transport.faults
        held = self._held
        for data, carried in cut:
            action = faults.action(self.address) if faults is not None else None
            if action == "drop":
                self._queued -= carried
            elif action is None and not held:
                self._blocked.append((data, carried))
            else:
                delay = float(action) if isinstance(action, float | int) else 0.0
                release = max(now + delay, held[-1][0] if held else now)
                held.append((release, data, carried))
                if self._release_timer is None:
                    self._release_timer = self._loop.call_at(release, self._release_held)

    def _release_held(self) -> None:
        self._release_timer = None
        if self.closed:
            return
        # Timers may fire a little early (uvloop counts milliseconds).
        due = self._loop.time() + 0.001
        held = self._held
        while held and held[0][0] <= due:
            _, data, carried = held.popleft()
            self._blocked.append((data, carried))
        if held:
            self._release_timer = self._loop.call_at(held[0][0], self._release_held)
        self._send_blocked()

    def _send_blocked(self) -> None:
        blocked = self._blocked
        sock = self._sock
        while blocked:
            data, carried = blocked[0]
            try:
                sock.send(data, zmq.NOBLOCK, copy=len(data) < _ZERO_COPY_BYTES)
            except zmq.Again:
                self._watch_writable()
                return
            except zmq.ZMQError as exc:
                log.warning("send to %s failed: %s", self.address, exc)
                return
            blocked.popleft()
            self._queued -= carried
            self.frames_out += 1
            self.bytes_out += len(data)
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)

    def _watch_writable(self) -> None:
        if not self._watching:
            self._watching = True
            self._loop.add_reader(self._fd, self._on_writable)
        self._loop.call_soon(self._on_writable)  # edge-triggered: check once now

    def _on_writable(self) -> None:
        if self.closed or not self._blocked:
            return
        if int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLOUT:
            self._send_blocked()

    def poll(self) -> None:
        """Read pending socket-monitor events (a safety net for a missed wake-up)."""
        self._on_monitor()

    def _on_monitor(self) -> None:
        lost = False
        while not self.closed:
            try:
                msg = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            event = parse_monitor_message(msg)["event"]
            if event == zmq.EVENT_CONNECTED:
                self._was_connected = True
            elif event == zmq.EVENT_DISCONNECTED and self._was_connected:
                lost = True
        if lost and not self.closed:
            self._transport._on_lost(self)

    def close(self, linger: float = 0.0) -> None:
        """Close the DEALER; with `linger`, frames already handed to ZeroMQ get that long."""
        if self.closed:
            return
        if linger:
            self._flush(self._loop.time())
        self.closed = True
        self._transport._links.discard(self)
        self._loop.remove_reader(self._monitor_fd)
        if self._watching:
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close(int(linger * 1000))
        self._outbox.clear()
        self._blocked.clear()
        self._held.clear()
        if self._release_timer is not None:
            self._release_timer.cancel()


def _set_zmtp_heartbeat(sock: zmq.Socket[bytes], cfg: NodeConfig) -> None:
    # ZMTP heartbeats close a connection whose peer stopped answering even when no
    # application traffic flows; the node's own heartbeats decide "down".
    ivl = max(int(cfg.tick * 1000), 100)
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(cfg.down_after * 1000) + ivl)
    sock.setsockopt(zmq.HEARTBEAT_TTL, int(cfg.down_after * 1000) + ivl)


def _fd(sock: zmq.Socket[bytes]) -> int:
    """The socket's ZMQ_FD: readable whenever its ZMQ_EVENTS may have changed."""
    return int(sock.getsockopt(zmq.FD))
