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
import errno
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from zmesh.core.protocol import frame
from zmesh.core.spin import Awaits, SpinBackoff
from zmesh.errors import ConfigError, QueueFull
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.curve import ZAP_DOMAIN, AllowList, KeyPair, ZapHandler

log = logging.getLogger("zmesh.transport")

#: (identity, parts, user): `user` is the node name the ZAP handler bound to the
#: connection's CURVE key, or None on a plain transport (and on a fail-open connection).
FrameHandler = Callable[[bytes, list[bytes], "str | None"], None]
LostHandler = Callable[["OutLink"], None]
#: (link, description): the security handshake under `link` failed (a CURVE/plain
#: mismatch, a key refused by the peer's allow-list, a wrong server key).
RefusedHandler = Callable[["OutLink", str], None]

_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

# Frames drained per wake-up before yielding to other tasks (fairness vs. wake-up cost).
_RECV_BUDGET = 2000
# Frames above this are sent without a copy; small ones are cheaper to copy.
_ZERO_COPY_BYTES = 64 * 1024
# An outbox this full is sent without waiting for the end of the loop iteration.
_EARLY_BYTES = 32 * 1024
# Plain ints: pyzmq's enums cost Python calls per use (reading EVENTS: 3.3 -> 1.8 us).
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class OutLink(Protocol):
    """An outbound channel to one peer; envelopes queued on it arrive in order."""

    address: str
    closed: bool
    last_flush: float
    frames_out: int  # frames handed to the socket (batches), and their bytes
    bytes_out: int

    def poll(self) -> None: ...

    def enqueue(self, envelope: bytes, urgent: bool = True, awaits: Awaits = "maybe") -> None: ...
    def close(self, linger: float = 0.0) -> None: ...


class Faults(Protocol):
    """Fault injection under the transport (see zmesh.testing): what happens to the next
    outbound frame for the peer at `address`: None (send it), "drop", or a delay in
    seconds. Asked once per frame (a frame may carry several envelopes)."""

    def action(self, address: str) -> str | float | None: ...


class Transport(Protocol):
    """What a node needs from the network; a test harness may wrap it to inject faults."""

    address: str

    def open(self, address: str, server_key: bytes | None = None) -> OutLink: ...
    async def close(self, linger: float = 0.0) -> None: ...


class ZmqTransport:
    """The ROUTER/DEALER transport over tcp:// or ipc://."""

    def __init__(
        self,
        config: NodeConfig,
        on_frame: FrameHandler,
        on_lost: LostHandler,
        *,
        keys: KeyPair | None = None,
        allow: AllowList | None = None,
        on_refused: RefusedHandler | None = None,
        on_zap_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self._config = config
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_refused = on_refused
        self._on_zap_refused = on_zap_refused or (lambda reason, detail: None)
        #: This node's CURVE keys; None for a plain (cookie-only) transport.
        self.keys = keys
        self._allow = allow
        self.zap: ZapHandler | None = None
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context(io_threads=1)
        self._router: zmq.Socket[bytes] | None = None
        self._links: set[ZmqLink] = set()
        self._dirty: list[ZmqLink] = []
        self._flush_scheduled = False
        self._drain_scheduled = False
        # Busy-polling for an answer after a lone frame left (see `spin`).
        self._spin_for = config.busy_poll
        self._spin_backoff = SpinBackoff()  # after a message
        self._call_backoff = SpinBackoff()  # after a call
        self._spun_by = self._spin_backoff  # the backoff of the spin under way
        self._spinning = False
        self._spin_until = 0.0  # 0.0 once a frame came
        self._skipped_at = 0.0  # when a call's frame left without a spin; 0.0 once answered
        #: Spins started, and those that caught a frame (inspection, tests).
        self.spins = 0
        self.spins_caught = 0
        # Advanced by every read and every flush: a link sends one urgent frame at once
        # per epoch (see ZmqLink.enqueue).
        self._epoch = 0
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
        if self.keys is not None:
            assert self._allow is not None
            # The handler exists before the socket can accept anyone, and the domain is
            # enforced: with no handler answering, libzmq refuses instead of admitting.
            self.zap = ZapHandler(self._ctx, self._allow, self._on_zap_refused)
            router.setsockopt(zmq.CURVE_SERVER, 1)
            router.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
            router.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
            router.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
            router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
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
        self._epoch += 1
        router = self._router
        if router is None or self._paused:
            return
        on_frame = self._on_frame
        curve = self.keys is not None
        for _ in range(_RECV_BUDGET):
            try:
                if curve:
                    identity, user, parts = _recv_with_user(router)
                else:
                    identity, parts = _recv_parts(router)
                    user = None
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("router receive failed: %s", exc)
                return
            if self._spin_until:
                self._caught()
            elif self._skipped_at:
                self._answered_unspun()
            try:
                on_frame(identity, parts, user)
            except Exception:
                log.exception("inbound frame handler failed")
            # Cheaper than the zmq.Again that the next receive would raise, and it
            # re-arms the edge-triggered descriptor just as well.
            if not router.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
                return
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def spin(self, awaits: Awaits = "maybe") -> None:
        """A lone frame just left, owed `awaits` back: poll the ROUTER for up to
        `NodeConfig.busy_poll` seconds, once per loop iteration, for its answer (see
        zmesh/core/spin.py).

        The poll is a callback that queues itself again, so the selector does not sleep
        meanwhile and every other ready callback still runs between two polls."""
        if self._spin_for is None or awaits == "nothing":
            return
        backoff = self._call_backoff if awaits == "reply" else self._spin_backoff
        if not backoff.should_spin():
            if awaits == "reply":
                self._skipped_at = self._loop.time()
            return
        self._spun_by = backoff
        self._spin_until = self._loop.time() + self._spin_for
        if not self._spinning:
            self._spinning = True
            self.spins += 1
            self._loop.call_soon(self._spin)

    def _caught(self) -> None:
        """A frame came while spinning: the spin paid (its next poll ends it)."""
        self._spin_until = 0.0
        self._skipped_at = 0.0
        self.spins_caught += 1
        self._spun_by.caught()

    def _answered_unspun(self) -> None:
        """A frame came after a call's frame that left without a spin: the calls spin
        again if a spin would have caught it (see zmesh/core/spin.py)."""
        delay = self._loop.time() - self._skipped_at
        self._skipped_at = 0.0
        self._call_backoff.answered(delay, self._spin_for or 0.0)

    def _spin(self) -> None:
        router = self._router
        if not self._spin_until or router is None or self._paused:
            self._spinning = False  # a frame came (read by `_drain`), or nothing to poll
            self._spin_until = 0.0
        elif router.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
            self._drain()  # counts the catch
            self._spinning = False
        elif self._loop.time() < self._spin_until:
            # No sched_yield here: on a loaded machine it made the round trip slower (181
            # against 150 us), not faster.
            self._loop.call_soon(self._spin)
        else:
            self._spinning = False
            self._spin_until = 0.0
            self._spun_by.missed()

    # -- outbound -----------------------------------------------------------------------

    def open(self, address: str, server_key: bytes | None = None) -> ZmqLink:
        """A new DEALER connected to `address` with a fresh random identity; on a CURVE
        transport it is a CURVE client that accepts only the server key `server_key`."""
        if (self.keys is None) != (server_key is None):
            raise ConfigError(f"a link to {address} needs a server key iff CURVE is on")
        link = ZmqLink(self, address, server_key)
        self._links.add(link)
        return link

    def _mark_dirty(self, link: ZmqLink) -> None:
        self._dirty.append(link)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._epoch += 1
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
        if self.zap is not None:
            self.zap.close()
        if self._router is not None:
            self._loop.remove_reader(_fd(self._router))
            self._router.close(0)
            self._router = None
        # term() waits for lingering sockets: keep it off the event loop.
        await self._loop.run_in_executor(None, self._ctx.term)


class ZmqLink:
    """A DEALER to one peer, with its outbox, batching and disconnect monitor."""

    def __init__(self, transport: ZmqTransport, address: str, server_key: bytes | None) -> None:
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
        self._outbox_bytes = 0  # the part of `_queued` still in `_outbox`
        self._dirty = False  # a flush is due at the end of this loop iteration
        # The transport's epoch of this link's last immediate frame: one per epoch.
        self._sent_epoch = -1
        self._watching = False
        sock = transport._ctx.socket(zmq.DEALER)
        # A leading zero byte is reserved by ZeroMQ for generated identities.
        sock.setsockopt(zmq.ROUTING_ID, b"\x01" + os.urandom(15))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, cfg.hwm)
        # Retry an absent peer with backoff rather than every 100 ms forever, capped like
        # the node's own retries: a peer back up is dialled within reconnect_cap.
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(cfg.reconnect_cap * 1000))
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        _set_zmtp_heartbeat(sock, cfg)
        keys = transport.keys
        if keys is not None and server_key is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        self._sock = sock
        self._fd = _fd(sock)
        #: Whether a TCP connection was made but no security handshake finished yet.
        self.unsecured = False
        #: Whether this link is a CURVE client.
        self.curve = server_key is not None
        # The socket monitor reports a closed TCP connection at once: a killed peer is
        # seen down in milliseconds, not after the heartbeat timeout. Failed security
        # handshakes tell the connecting side why it is refused.
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_CONNECTED
            | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | _HANDSHAKE_FAILED
        )
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

    def enqueue(self, envelope: bytes, urgent: bool = True, awaits: Awaits = "maybe") -> None:
        """Queue `envelope`; raise QueueFull when the peer is this far behind.

        The first urgent envelope (a message) since the transport last read or flushed
        leaves at once, with the signals queued before it, followed by a spin for what
        it `awaits` (see `ZmqTransport.spin`); anything else waits for the end of the loop
        iteration and shares a frame with what follows.
        """
        if self.closed:
            return
        if self._queued > self._max_bytes:
            raise QueueFull(
                f"{self._queued} bytes already queued for {self.address}: the peer is not reading"
            )
        transport = self._transport
        if (
            urgent
            and self._sent_epoch != transport._epoch
            and not self._blocked
            and not transport._paused
            and transport.faults is None
            and not self._held
            and self._queued < self._batch_bytes  # the outbox fits in one frame
        ):
            # A round trip does not wait a loop iteration per hop, and a lone message
            # schedules no flush (a loop iteration less on each side of a call); what
            # follows before the next read or flush is coalesced.
            self._sent_epoch = transport._epoch
            outbox = self._outbox
            data = frame([*outbox, envelope], self._seq)
            try:
                self._sock.send(data, _NOBLOCK)
            except zmq.Again:
                pass
            else:
                self._seq += 1
                self.frames_out += 1
                self.bytes_out += len(data)
                self.last_flush = self._loop.time()
                if outbox:
                    self._queued -= self._outbox_bytes
                    self._outbox = []
                    self._outbox_bytes = 0
                transport.spin(awaits)  # its answer is likely on the way
                return
        if not self._dirty:
            self._dirty = True
            transport._mark_dirty(self)
        self._outbox.append(envelope)
        size = len(envelope)
        self._queued += size
        self._outbox_bytes += size
        if self._outbox_bytes >= _EARLY_BYTES and not transport._paused:
            # A burst need not wait for the end of the loop iteration: the peer starts
            # on this much while we keep producing (pipelined calls: 63k -> 80k/s).
            self._flush(self._loop.time())

    def _flush(self, now: float) -> None:
        self._dirty = False
        if self.closed:
            return
        self.last_flush = now
        outbox = self._outbox
        if outbox:
            self._outbox = []
            self._outbox_bytes = 0
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
                sock.send(data, _NOBLOCK, copy=len(data) < _ZERO_COPY_BYTES)
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
        monitor = self._monitor
        while not self.closed:
            try:
                # Cheaper than the zmq.Again an empty receive raises (the tick polls
                # every link).
                if not int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
                    break
                msg = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # zmq.Again included
                break
            parsed = parse_monitor_message(msg)
            event = parsed["event"]
            if event == zmq.EVENT_CONNECTED:
                self._was_connected = True
                self.unsecured = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.unsecured = False
            elif event == zmq.EVENT_DISCONNECTED and self._was_connected:
                lost = True
            elif event & _HANDSHAKE_FAILED:
                refused = self._transport._on_refused
                if refused is not None:
                    refused(self, _describe_failure(event, int(parsed["value"])))
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
        self._outbox_bytes = 0
        self._blocked.clear()
        self._held.clear()
        if self._release_timer is not None:
            self._release_timer.cancel()


def _recv_parts(router: zmq.Socket[bytes]) -> tuple[bytes, list[bytes]]:
    """One message off the ROUTER: the sender's identity and the parts that follow it.

    `recv_multipart` reads the RCVMORE option after each part, and pyzmq (27) turns every
    option number into its enum first: about 1 us each, 2 us a frame. A Frame's `more`
    is a plain field (send and receive of a frame on inproc: 2.7 -> 1.4 us)."""
    identity = router.recv(_NOBLOCK)  # a ROUTER's identity part always has one after it
    part = router.recv(_NOBLOCK, copy=False)
    parts = [part.bytes]
    while part.more:  # more than one part: the frame handler refuses it, counted
        part = router.recv(_NOBLOCK, copy=False)
        parts.append(part.bytes)
    return identity, parts


def _recv_with_user(router: zmq.Socket[bytes]) -> tuple[bytes, str | None, list[bytes]]:
    """One message and the User-Id its connection was admitted with (None if none)."""
    frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
    try:
        found = frames[-1].get("User-Id")
        user = found if isinstance(found, str) else None
    except zmq.ZMQError:  # a connection no ZAP handler admitted: fail closed upstream
        user = None
    return frames[0].bytes, user, [f.bytes for f in frames[1:]]


def _describe_failure(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "it refused our CURVE key (not on its allow-list, or bound to another name)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "security mismatch: one side uses CURVE (--curve-secret), the other does not"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and value == errno.EPIPE:
        # A CURVE server hangs up without a reason on a NULL greeting and on a client
        # that expected another server key: the client cannot tell which.
        return (
            "it hung up during the security handshake: a security mismatch (one side"
            " uses CURVE, the other does not) or a wrong server key for the name given"
        )
    if value in (zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC, zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE):
        return "the CURVE handshake failed (wrong server key?)"
    return f"the security handshake failed (ZMTP error {value:#x})"


def _set_zmtp_heartbeat(sock: zmq.Socket[bytes], cfg: NodeConfig) -> None:
    # ZMTP heartbeats (libzmq's I/O thread, no Python wake-up) close a connection whose
    # peer stopped answering; the DEALER's monitor then reports it lost. Only DEALERs
    # PING: every pair of nodes has one each way, and a ROUTER answers PINGs anyway (its
    # side of a connection whose DEALER fell silent closes after the TTL the PINGs carry).
    ivl = max(int(cfg.tick * 1000), 100)
    down = int(cfg.down_after * 1000)
    # "zmtp": a stopped peer is seen down between down_after - tick and down_after after
    # it stopped. "heartbeat": the node's heartbeats decide, ZMTP is only a backstop.
    timeout = max(down - ivl, 100) if cfg.liveness == "zmtp" else down + ivl
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
    sock.setsockopt(zmq.HEARTBEAT_TTL, down + ivl)


def _fd(sock: zmq.Socket[bytes]) -> int:
    """The socket's ZMQ_FD: readable whenever its ZMQ_EVENTS may have changed."""
    return int(sock.getsockopt(zmq.FD))
