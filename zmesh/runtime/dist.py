"""Distribution: peer sessions, the cookie handshake, failure detection, and the
envelopes that carry messages, links, monitors, exit signals and requests between nodes.

Handshake (each node has a DEALER to each peer; frames arrive on the ROUTER tagged
with the sender's random DEALER identity):

    A -> B  HELLO(name, creation, address, nA)
    B -> A  CHALLENGE(name, creation, address, nA, nB, proof_B(nA))  # B knows the cookie
    A -> B  AUTH(nB, proof_A(nB))                                    # A knows the cookie
    B -> A  WELCOME                                                  # both sides up

An identity becomes trusted only after its owner proved the cookie over a nonce we
chose; frames from any other identity are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zmesh.core import protocol as proto
from zmesh.core.codec import Codec, Limits
from zmesh.core.protocol import Kind
from zmesh.errors import (
    CallTimeout,
    ConfigError,
    ConnectError,
    DecodeError,
    EncodeError,
    NodeDown,
    NoProc,
    RemoteError,
    ZmeshError,
)
from zmesh.runtime.cookie import default_cookie
from zmesh.runtime.loader import import_all, reference, resolve
from zmesh.runtime.transport import OutLink, ZmqTransport
from zmesh.terms import NOCONNECTION, NOPROC, Pid, Ref

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.dist")

NodeListener = Callable[[str, str], None]  # (event "up" | "down", node name)
RequestHandler = Callable[[str, Any], Awaitable[Any] | Any]  # (from node, body) -> reply
CastHandler = Callable[[str, Any], None]

# What a handler raises on a malformed envelope: refused and counted, never propagated.
_BAD_INPUT = (ValueError, TypeError, KeyError, IndexError, AttributeError, DecodeError)
_UNTRUSTED_MAX = 4096  # handshake frames are small; anything larger from a stranger is hostile
_ERRORS: dict[str, type[ZmeshError]] = {
    cls.__name__: cls for cls in (NoProc, RemoteError, ConfigError, EncodeError, NodeDown)
}


@dataclass(eq=False)
class Peer:
    """A session with one remote node incarnation."""

    name: str
    creation: int
    address: str
    link: OutLink
    identity: bytes = b""
    up: bool = False
    last_seen: float = 0.0
    next_seq: int = -1  # the frame number expected next from this peer (-1: any)


@dataclass(eq=False)
class _Outbound:
    """A `connect` in progress: our HELLO went out carrying `nonce`."""

    address: str
    link: OutLink
    nonce: bytes
    future: asyncio.Future[str]
    name: str = ""


@dataclass(eq=False)
class _Inbound:
    """A HELLO received from an identity not yet trusted; we sent it `nonce`."""

    name: str
    creation: int
    address: str
    nonce: bytes
    deadline: float
    link: OutLink


@dataclass(eq=False)
class _Links:
    """Cross-node links and monitors touching one peer, so its loss can fire them."""

    links: set[tuple[Pid, Pid]] = field(default_factory=set)  # (local, remote)
    monitors: dict[Ref, tuple[Pid, Pid]] = field(default_factory=dict)  # ours on theirs
    watchers: dict[Ref, Pid] = field(default_factory=dict)  # theirs on our pid


class Distribution:
    """The node's connection to the cluster (owned by `Node`, started and stopped by it)."""

    def __init__(self, node: Node, listen: str, cookie: bytes | None, load: Sequence[str]) -> None:
        self.node = node
        self.config = node.config
        self._listen = listen
        self._cookie = cookie if cookie is not None else default_cookie()
        if not self._cookie:
            raise ConfigError("the cookie must not be empty")
        self.load = frozenset(load)
        import_all(self.load)
        self.codec = Codec(Limits(max_size=self.config.max_message_size))
        self.address = ""
        self._transport: ZmqTransport | None = None
        self._peers: dict[str, Peer] = {}  # up or connecting, by name
        self._trusted: dict[bytes, Peer] = {}
        self._links_by_addr: dict[str, OutLink] = {}
        self._outbound: dict[bytes, _Outbound] = {}
        self._inbound: dict[bytes, _Inbound] = {}
        self._connecting: dict[str, asyncio.Future[str]] = {}
        self._cross: dict[str, _Links] = {}
        self._requests: dict[Ref, tuple[str, asyncio.Future[Any]]] = {}
        self._handlers: dict[str, RequestHandler] = {
            "spawn": self._handle_spawn,
            "start": self._handle_start,
            "info": lambda sender, body: self.node.info(),
        }
        self._cast_handlers: dict[str, CastHandler] = {}
        self._listeners: list[NodeListener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seeds: list[str] = []
        self.paused = False
        self._left = False
        self.counters: Counter[str] = Counter()
        self._log_budget: Counter[str] = Counter()
        self._dispatch: dict[int, Callable[[Peer, list[Any]], None]] = {
            Kind.SEND: self._on_send,
            Kind.LINK: self._on_link,
            Kind.UNLINK: self._on_unlink,
            Kind.EXIT: self._on_exit,
            Kind.MONITOR: self._on_monitor,
            Kind.DEMONITOR: self._on_demonitor,
            Kind.DOWN: self._on_down,
            Kind.REQUEST: self._on_request,
            Kind.REPLY: self._on_reply,
            Kind.CAST: self._on_cast,
            Kind.HEARTBEAT: _ignore,
            Kind.WELCOME: self._on_welcome,
            Kind.PEERS: self._on_peers,
            Kind.BYE: self._on_bye,
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, seeds: Sequence[str]) -> None:
        self._transport = ZmqTransport(self.config, self._on_frame, self._on_link_lost)
        self.address = self._transport.bind(self._listen)
        self._seeds = list(seeds)
        self._spawn_task(self._tick_loop())
        if self._seeds:
            self._spawn_task(self._seed_loop())

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def leave(self) -> None:
        """Tell every peer we are going, so they see us down at once."""
        for peer in list(self._peers.values()):
            if peer.up:
                self._emit(peer, Kind.BYE)
        self._seeds = []
        # Peers forget us on BYE: what our processes' exits would announce is moot.
        self._left = True

    async def close(self, linger: float = 0.2) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in list(self._peers.values()):
            self._forget(peer, NOCONNECTION, notify=False)
        for _, fut in self._requests.values():
            if not fut.done():
                fut.set_exception(NodeDown("the node stopped"))
        if self._transport is not None:
            # Give BYE frames a moment to leave; a dead peer costs at most this.
            await self._transport.close(linger=linger)
            self._transport = None

    # -- membership -------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        return sorted(name for name, peer in self._peers.items() if peer.up)

    def peer(self, name: str) -> Peer | None:
        peer = self._peers.get(name)
        return peer if peer is not None and peer.up else None

    def subscribe(self, listener: NodeListener) -> Callable[[], None]:
        """Call `listener(event, name)` on every node "up" and "down"; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def connect(self, address: str, timeout: float | None) -> str:
        timeout = self.config.connect_timeout if timeout is None else timeout
        for peer in self._peers.values():
            if peer.up and peer.address == address:
                return peer.name
        pending = self._connecting.get(address)
        if pending is None:
            pending = self._start_connect(address)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), timeout)
        except TimeoutError:
            raise ConnectError(f"no answer from {address} within {timeout} s") from None

    def _start_connect(self, address: str) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        future.add_done_callback(_consume)
        self._connecting[address] = future
        link = self._link_to(address)
        nonce = os.urandom(proto.NONCE_BYTES)
        attempt = _Outbound(address, link, nonce, future)
        self._outbound[nonce] = attempt
        self._emit_link(
            link, Kind.HELLO, proto.VERSION, self.node.name, self.node.creation, self.address, nonce
        )

        def finished(_: object) -> None:
            self._outbound.pop(nonce, None)
            if self._connecting.get(address) is future:
                del self._connecting[address]
            if future.cancelled() or future.exception() is not None:
                half = self._peers.get(attempt.name)
                if half is not None and not half.up and half.link is link:
                    self._forget(half, NOCONNECTION)
                self._close_orphan(link)

        future.add_done_callback(finished)
        loop.call_later(self.config.connect_timeout, _fail, future, address)
        return future

    def _link_to(self, address: str) -> OutLink:
        link = self._links_by_addr.get(address)
        if link is None or link.closed:
            assert self._transport is not None
            link = self._links_by_addr[address] = self._transport.open(address)
        return link

    def _mark_up(self, peer: Peer) -> None:
        if peer.up:
            return
        old = self._peers.get(peer.name)
        if old is not None and old is not peer and old.up:
            # Superseded by a restart or a reconnect; the new session may share the link.
            self._forget(old, NOCONNECTION, keep_link=old.link is peer.link)
        peer.up = True
        peer.last_seen = asyncio.get_running_loop().time()
        self._peers[peer.name] = peer
        for attempt in list(self._outbound.values()):
            if attempt.name == peer.name and not attempt.future.done():
                attempt.future.set_result(peer.name)
        others = [[p.name, p.address] for p in self._peers.values() if p.up and p is not peer]
        self._emit(peer, Kind.PEERS, others)
        log.info("%s: node %s up (%s)", self.node.name, peer.name, peer.address)
        self._notify("up", peer.name)

    def _forget(
        self, peer: Peer, reason: object, *, notify: bool = True, keep_link: bool = False
    ) -> None:
        """Drop a session: close its link, fire every link and monitor across it."""
        was_up = peer.up
        peer.up = False
        if self._peers.get(peer.name) is peer:
            del self._peers[peer.name]
        if peer.identity and self._trusted.get(peer.identity) is peer:
            del self._trusted[peer.identity]
        if not keep_link:
            if self._links_by_addr.get(peer.link.address) is peer.link:
                del self._links_by_addr[peer.link.address]
            peer.link.close()
        if not was_up:
            return
        log.info("%s: node %s down (%s)", self.node.name, peer.name, reason)
        node = self.node
        cross = self._cross.pop(peer.name, None)
        if cross is not None:
            for local, remote in cross.links:
                proc = node._local(local)
                if proc is not None:
                    node._exit_signal(proc, remote, NOCONNECTION, linked=True)
            for ref, (watcher, target) in cross.monitors.items():
                node._deliver_down(watcher, ref, target, NOCONNECTION)
            for ref, target in cross.watchers.items():
                proc = node._local(target)
                if proc is not None and proc.watchers is not None:
                    proc.watchers.pop(ref, None)
        for ref, (name, fut) in list(self._requests.items()):
            if name == peer.name and not fut.done():
                fut.set_exception(NodeDown(f"node {peer.name!r} went down"))
                del self._requests[ref]
        if notify:
            self._notify("down", peer.name)

    def _notify(self, event: str, name: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, name)
            except Exception:
                log.exception("node listener %r failed", listener)

    async def _tick_loop(self) -> None:
        """Heartbeats out, silent peers down, stale handshakes dropped."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.tick)
            if self.paused:
                continue
            now = loop.time()
            for peer in list(self._peers.values()):
                if not peer.up:
                    continue
                peer.link.poll()
                if not peer.up:
                    continue  # the monitor found its connection closed
                if now - peer.last_seen > cfg.down_after:
                    self.counters["heartbeat_timeouts"] += 1
                    self._forget(peer, NOCONNECTION)
                elif now - peer.link.last_flush >= cfg.tick * 0.5:
                    self._signal(peer, Kind.HEARTBEAT)
            for identity, pending in list(self._inbound.items()):
                if pending.deadline < now:
                    del self._inbound[identity]
                    self.counters["handshakes_expired"] += 1
                    self._close_orphan(pending.link)

    def _close_orphan(self, link: OutLink) -> None:
        if any(p.link is link for p in self._peers.values()):
            return
        if any(a.link is link for a in self._outbound.values()):
            return
        if self._links_by_addr.get(link.address) is link:
            del self._links_by_addr[link.address]
        link.close()

    async def _seed_loop(self) -> None:
        """Keep joining seeds that are not connected, so start order does not matter."""
        while self._seeds:
            connected = {
                a for p in self._peers.values() if p.up for a in (p.address, p.link.address)
            }
            for address in self._seeds:
                if address == self.address or address in self._connecting:
                    continue
                if address not in connected:
                    self._start_connect(address)
            await asyncio.sleep(self.config.seed_retry)

    def pause(self) -> None:
        """Freeze the node's networking: nothing read, sent or timed out (like SIGSTOP)."""
        self.paused = True
        if self._transport is not None:
            self._transport.pause()

    def resume(self) -> None:
        """Undo `pause`; peers that gave up on us meanwhile are found down from our side too."""
        if self._transport is not None:
            self._transport.resume()
        loop = asyncio.get_running_loop()
        # Time spent paused is not the peers' silence: restart their clocks.
        for peer in self._peers.values():
            peer.last_seen = max(peer.last_seen, loop.time() - self.config.tick)
        self.paused = False

    def _on_link_lost(self, link: OutLink) -> None:
        for peer in list(self._peers.values()):
            if peer.link is link and peer.up:
                self.counters["connections_lost"] += 1
                self._forget(peer, NOCONNECTION)

    # -- inbound frames -------------------------------------------------------------------------

    def _on_frame(self, identity: bytes, parts: list[bytes]) -> None:
        if len(parts) != 1:
            self._refuse("bad_frame_count", f"{len(parts)} parts from {identity.hex()[:8]}")
            return
        data = parts[0]
        peer = self._trusted.get(identity)
        if peer is None:
            self._on_untrusted(identity, data)
            return
        try:
            envelopes = proto.decode_frame(self.codec, data)
        except DecodeError as exc:
            self._refuse("bad_frames", f"from {peer.name}: {exc}")
            return
        seq = envelopes[0][1]
        if peer.next_seq >= 0 and seq != peer.next_seq and peer.up:
            # Frames were lost while we thought the connection up: FIFO without loss no
            # longer holds, so the session ends (at-most-once) and a reconnect resyncs.
            self._refuse("frame_gaps", f"from {peer.name}: frame {seq}, expected {peer.next_seq}")
            self._forget(peer, NOCONNECTION)
            return
        peer.next_seq = seq + 1
        peer.last_seen = asyncio.get_running_loop().time()
        dispatch = self._dispatch
        for env in envelopes[1:]:
            handler = dispatch.get(env[0])
            if handler is None:
                if env[0] in proto.HANDSHAKE_KINDS:
                    # Both sides connected at once: this identity is already trusted
                    # through our handshake while its own is still finishing. The
                    # handshake may replace the session: later envelopes use the new one.
                    self._handshake(identity, env)
                    peer = self._trusted.get(identity, peer)
                    peer.next_seq = seq + 1
                else:
                    self._refuse("unexpected_envelopes", f"kind {env[0]} from {peer.name}")
                continue
            try:
                handler(peer, env)
            except _BAD_INPUT as exc:
                self._refuse("bad_envelopes", f"kind {env[0]} from {peer.name}: {exc!r}")
            if not peer.up and env[0] == Kind.BYE:
                break

    def _refuse(self, counter: str, detail: str) -> None:
        """Count a refused input; log the first few of each kind, then every 1000th."""
        self.counters[counter] += 1
        n = self.counters[counter]
        if n <= 5 or n % 1000 == 0:
            log.warning("%s: refused (%s, #%d): %s", self.node.name, counter, n, detail)

    def _on_untrusted(self, identity: bytes, data: bytes) -> None:
        if len(data) > _UNTRUSTED_MAX:
            self._refuse("unauthenticated", f"{len(data)}-byte frame before the handshake")
            return
        try:
            envelopes = proto.decode_frame(self.codec, data)
        except DecodeError as exc:
            self._refuse("bad_frames", f"before the handshake: {exc}")
            return
        for env in envelopes[1:]:
            if env[0] in proto.HANDSHAKE_KINDS:
                self._handshake(identity, env)
            else:
                self._refuse("unauthenticated", f"kind {env[0]} before the handshake")
        trusted = self._trusted.get(identity)
        if trusted is not None:  # this frame made the identity trusted: count from it
            trusted.next_seq = envelopes[0][1] + 1

    def _handshake(self, identity: bytes, env: list[Any]) -> None:
        kind = env[0]
        try:
            if kind == Kind.HELLO:
                self._on_hello(identity, env)
            elif kind == Kind.CHALLENGE:
                self._on_challenge(identity, env)
            elif kind == Kind.AUTH:
                self._on_auth(identity, env)
            else:
                self._on_refuse(env)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._refuse("bad_handshakes", f"kind {kind}: {exc!r}")

    def _on_hello(self, identity: bytes, env: list[Any]) -> None:
        _, version, name, creation, address, nonce = env
        _check(name, str)
        _check(creation, int)
        _check(address, str)
        _check(nonce, bytes)
        existing = self._peers.get(name)
        # A node we are connected to (same name, same address): answer on the link it
        # already trusts. Anyone else, an impostor included, is answered at `address`.
        same = existing is not None and existing.up and existing.address == address
        link = existing.link if same and existing is not None else self._link_to(address)
        reply_nonce = os.urandom(proto.NONCE_BYTES)
        if version != proto.VERSION:
            text = f"protocol version {version} is not {proto.VERSION}"
            self._emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_VERSION, text)
            return
        clash = self._name_clash(name, creation, address)
        if clash:
            self._emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_NAME, clash)
            self.counters["name_clashes"] += 1
            return
        if len(self._inbound) >= self.config.max_pending_handshakes:
            self._emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_BUSY, "too many handshakes")
            return
        deadline = asyncio.get_running_loop().time() + self.config.handshake_timeout
        self._inbound[identity] = _Inbound(name, creation, address, reply_nonce, deadline, link)
        me = self.node
        my_proof = proto.proof(self._cookie, b"challenge", nonce, me.name, name)
        self._emit_link(
            link, Kind.CHALLENGE, proto.VERSION, me.name, me.creation, self.address,
            nonce, reply_nonce, my_proof,
        )  # fmt: skip

    def _name_clash(self, name: str, creation: int, address: str) -> str:
        if name == self.node.name:
            return f"the name {name!r} is taken by the node at {self.address}"
        existing = self._peers.get(name)
        if existing is not None and existing.up and existing.address != address:
            return f"the name {name!r} is taken by the node at {existing.address}"
        return ""

    def _on_challenge(self, identity: bytes, env: list[Any]) -> None:
        _, version, name, creation, address, our_nonce, their_nonce, their_proof = env
        _check(name, str)
        _check(creation, int)
        _check(address, str)
        _check(our_nonce, bytes)
        _check(their_nonce, bytes)
        attempt = self._outbound.get(our_nonce)
        if attempt is None or attempt.future.done():
            self._refuse("unexpected_handshakes", f"challenge from {name!r} with no hello")
            return
        me = self.node
        expected = proto.proof(self._cookie, b"challenge", our_nonce, name, me.name)
        if version != proto.VERSION:
            _fail_with(attempt, f"{address} speaks protocol {version}, we speak {proto.VERSION}")
            return
        if not proto.check_proof(expected, their_proof):
            self.counters["bad_cookies"] += 1
            self._emit_link(attempt.link, Kind.REFUSE, their_nonce, proto.REFUSE_COOKIE, "")
            _fail_with(attempt, f"{address} ({name}) has a different cookie")
            return
        if name == me.name:
            _fail_with(attempt, f"{address} is a node named {name!r} too: names must be unique")
            return
        existing = self._peers.get(name)
        if existing is not None and existing.up and existing.creation == creation:
            # Already connected under another address spelling: nothing to do.
            attempt.future.set_result(name)
            return
        attempt.name = name
        peer = Peer(name, creation, address, attempt.link, identity)
        self._trusted[identity] = peer
        if existing is None or not existing.up:
            self._peers[name] = peer
        my_proof = proto.proof(self._cookie, b"auth", their_nonce, me.name, name)
        self._emit_link(attempt.link, Kind.AUTH, their_nonce, my_proof)

    def _on_auth(self, identity: bytes, env: list[Any]) -> None:
        _, our_nonce, their_proof = env
        pending = self._inbound.pop(identity, None)
        if pending is None or our_nonce != pending.nonce:
            self._refuse("unexpected_handshakes", "auth with no matching hello")
            return
        expected = proto.proof(self._cookie, b"auth", pending.nonce, pending.name, self.node.name)
        if not proto.check_proof(expected, their_proof):
            self._refuse("bad_cookies", f"{pending.name!r} at {pending.address} failed the cookie")
            self._close_orphan(pending.link)
            return
        peer = Peer(pending.name, pending.creation, pending.address, pending.link, identity)
        existing = self._peers.get(peer.name)
        if existing is not None and not existing.up and existing.identity:
            self._trusted.pop(existing.identity, None)
        self._trusted[identity] = peer
        self._emit(peer, Kind.WELCOME)
        self._mark_up(peer)

    def _on_refuse(self, env: list[Any]) -> None:
        _, nonce, code, text = env
        attempt = self._outbound.get(nonce) if isinstance(nonce, bytes) else None
        if attempt is None:
            for identity, pending in list(self._inbound.items()):
                if pending.nonce == nonce:  # the connecting side refused our challenge
                    del self._inbound[identity]
                    self._refuse("refused_handshakes", f"{pending.name!r}: {code!r}")
                    self._close_orphan(pending.link)
                    return
            self._refuse("unexpected_handshakes", f"refusal {code!r} matching no hello")
            return
        if code == proto.REFUSE_COOKIE:
            message = f"{attempt.address} refused us: the cookies differ"
        elif code == proto.REFUSE_NAME:
            message = f"{attempt.address} refused us: name clash: {text}"
        elif code == proto.REFUSE_VERSION:
            message = f"{attempt.address} refused us: protocol mismatch: {text}"
        else:
            message = f"{attempt.address} refused us: {code}: {text}"
        _fail_with(attempt, message)

    def _on_welcome(self, peer: Peer, env: list[Any]) -> None:
        self._mark_up(peer)

    def _on_peers(self, peer: Peer, env: list[Any]) -> None:
        for name, address in env[1]:
            _check(name, str)
            _check(address, str)
            if name == self.node.name or name in self._peers or address in self._connecting:
                continue
            self._start_connect(address)

    def _on_bye(self, peer: Peer, env: list[Any]) -> None:
        self._forget(peer, NOCONNECTION)

    # -- outbound envelopes -----------------------------------------------------------------------

    def _emit(self, peer: Peer, *fields: object) -> None:
        self._emit_link(peer.link, *fields)

    def _signal(self, peer: Peer, *fields: object) -> None:
        """Emit a signal (link, monitor, ...): not latency-critical, so it joins the next
        frame to the peer instead of costing one of its own."""
        if not self._left:
            peer.link.enqueue(proto.encode_envelope(self.codec, *fields), urgent=False)

    def _emit_link(self, link: OutLink, *fields: object) -> None:
        if not self._left:
            link.enqueue(proto.encode_envelope(self.codec, *fields))

    def _up_peer(self, name: str, creation: int | None = None) -> Peer | None:
        peer = self._peers.get(name)
        if peer is None or not peer.up or (creation is not None and peer.creation != creation):
            return None
        return peer

    def send(self, dest: Pid, message: object) -> None:
        peer = self._peers.get(dest.node)
        if peer is None or not peer.up or peer.creation != dest.creation or self._left:
            self.counters["dropped_sends"] += 1  # at-most-once: nobody to deliver to
            return
        payload = self.codec.encode(message)
        peer.link.enqueue(self.codec.encode([Kind.SEND, dest.id, dest.creation, payload]))

    def _on_send(self, peer: Peer, env: list[Any]) -> None:
        _, pid_id, creation, payload = env
        node = self.node
        if creation != node.creation:
            return
        proc = node._procs.get(pid_id)
        if proc is None:
            return
        try:
            message = self.codec.decode(payload)
        except DecodeError as exc:
            self._refuse("bad_payloads", f"from {peer.name}: {exc}")
            return
        proc.deliver(message)

    def _cross_for(self, name: str) -> _Links:
        cross = self._cross.get(name)
        if cross is None:
            cross = self._cross[name] = _Links()
        return cross

    def send_link(self, local: Pid, remote: Pid) -> None:
        peer = self._up_peer(remote.node)
        if peer is None or peer.creation != remote.creation:
            reason = NOCONNECTION if peer is None else NOPROC
            proc = self.node._local(local)
            if proc is not None:
                self.node._exit_signal(proc, remote, reason, linked=True)
            return
        self._cross_for(remote.node).links.add((local, remote))
        self._signal(peer, Kind.LINK, local, remote)

    def send_unlink(self, local: Pid, remote: Pid) -> None:
        cross = self._cross.get(remote.node)
        if cross is not None:
            cross.links.discard((local, remote))
        peer = self._up_peer(remote.node, remote.creation)
        if peer is not None:
            self._signal(peer, Kind.UNLINK, local, remote)

    def send_exit(self, sender: Pid, target: Pid, reason: object, linked: bool) -> None:
        if linked:
            cross = self._cross.get(target.node)
            if cross is not None:
                cross.links.discard((sender, target))
        peer = self._up_peer(target.node, target.creation)
        if peer is not None:
            self._emit(peer, Kind.EXIT, sender, target, reason, linked)

    def send_monitor(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        peer = self._up_peer(target.node)
        if peer is None or peer.creation != target.creation:
            reason = NOCONNECTION if peer is None else NOPROC
            self.node._deliver_down(watcher, ref, target, reason)
            return
        self._cross_for(target.node).monitors[ref] = (watcher, target)
        self._signal(peer, Kind.MONITOR, ref, watcher, target)

    def send_demonitor(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        cross = self._cross.get(target.node)
        if cross is not None:
            cross.monitors.pop(ref, None)
        peer = self._up_peer(target.node, target.creation)
        if peer is not None:
            self._signal(peer, Kind.DEMONITOR, ref, watcher, target)

    def send_down(self, watcher: Pid, ref: Ref, target: Pid, reason: object) -> None:
        cross = self._cross.get(watcher.node)
        if cross is not None:
            cross.watchers.pop(ref, None)
        peer = self._up_peer(watcher.node, watcher.creation)
        if peer is not None:
            self._emit(peer, Kind.DOWN, ref, watcher, target, reason)

    def _from_peer(self, peer: Peer, pid: object) -> Pid:
        if type(pid) is not Pid or pid.node != peer.name:
            raise ValueError(f"{pid!r} is not a pid of {peer.name}")
        return pid

    def _ours(self, pid: object) -> Pid:
        if type(pid) is not Pid or pid.node != self.node.name:
            raise ValueError(f"{pid!r} is not a pid of this node")
        return pid

    def _on_link(self, peer: Peer, env: list[Any]) -> None:
        remote, local = self._from_peer(peer, env[1]), self._ours(env[2])
        proc = self.node._local(local)
        if proc is None:
            self._emit(peer, Kind.EXIT, local, remote, NOPROC, True)
            return
        if proc.links is None:
            proc.links = set()
        proc.links.add(remote)
        self._cross_for(peer.name).links.add((local, remote))

    def _on_unlink(self, peer: Peer, env: list[Any]) -> None:
        remote, local = self._from_peer(peer, env[1]), self._ours(env[2])
        proc = self.node._local(local)
        if proc is not None and proc.links is not None:
            proc.links.discard(remote)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.links.discard((local, remote))

    def _on_exit(self, peer: Peer, env: list[Any]) -> None:
        _, sender, target, reason, linked = env
        sender, target = self._from_peer(peer, sender), self._ours(target)
        if linked:
            cross = self._cross.get(peer.name)
            if cross is not None:
                cross.links.discard((target, sender))
        proc = self.node._local(target)
        if proc is not None:
            self.node._exit_signal(proc, sender, reason, linked=bool(linked))

    def _on_monitor(self, peer: Peer, env: list[Any]) -> None:
        _, ref, watcher, target = env
        _check(ref, Ref)
        watcher, target = self._from_peer(peer, watcher), self._ours(target)
        proc = self.node._local(target)
        if proc is None:
            self._emit(peer, Kind.DOWN, ref, watcher, target, NOPROC)
            return
        if proc.watchers is None:
            proc.watchers = {}
        proc.watchers[ref] = watcher
        self._cross_for(peer.name).watchers[ref] = target

    def _on_demonitor(self, peer: Peer, env: list[Any]) -> None:
        _, ref, _watcher, target = env
        proc = self.node._local(self._ours(target))
        if proc is not None and proc.watchers is not None:
            proc.watchers.pop(ref, None)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.watchers.pop(ref, None)

    def _on_down(self, peer: Peer, env: list[Any]) -> None:
        _, ref, watcher, target, reason = env
        _check(ref, Ref)
        watcher, target = self._ours(watcher), self._from_peer(peer, target)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.monitors.pop(ref, None)
        self.node._deliver_down(watcher, ref, target, reason)

    # -- requests between nodes -------------------------------------------------------------------

    def handle(self, op: str, handler: RequestHandler) -> None:
        """Answer requests `op` from peers with `handler(from_node, body)`."""
        self._handlers[op] = handler

    def handle_cast(self, op: str, handler: CastHandler) -> None:
        """Take one-way system messages `op` from peers with `handler(from_node, body)`."""
        self._cast_handlers[op] = handler

    def cast(self, name: str, op: str, body: object) -> bool:
        """Send a one-way system message to node `name`; False if it is not connected."""
        peer = self._up_peer(name)
        if peer is None:
            return False
        self._emit(peer, Kind.CAST, op, body)
        return True

    def broadcast(self, op: str, body: object) -> None:
        """A one-way system message to every connected node, encoded once."""
        if self._left:
            return
        env = proto.encode_envelope(self.codec, Kind.CAST, op, body)
        for peer in self._peers.values():
            if peer.up:
                peer.link.enqueue(env)

    async def request(self, name: str, op: str, body: object, timeout: float | None) -> Any:
        """Ask node `name` to run `op`; its reply, or NodeDown / CallTimeout / its error."""
        peer = self._up_peer(name)
        if peer is None:
            raise NodeDown(f"node {name!r} is not connected")
        timeout = self.config.request_timeout if timeout is None else timeout
        ref = self.node.make_ref()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[ref] = (name, future)
        try:
            self._emit(peer, Kind.REQUEST, ref, op, body)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"node {name!r} did not answer {op!r} within {timeout} s") from None
        finally:
            self._requests.pop(ref, None)

    def _on_request(self, peer: Peer, env: list[Any]) -> None:
        _, ref, op, body = env
        _check(ref, Ref)
        handler = self._handlers.get(op)
        if handler is None:
            self._emit(peer, Kind.REPLY, ref, False, ["RemoteError", f"unknown request {op!r}"])
            return
        self._spawn_task(self._answer(peer.name, ref, handler, body))

    async def _answer(self, name: str, ref: Ref, handler: RequestHandler, body: Any) -> None:
        try:
            result = handler(name, body)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            reply: list[Any] = [True, result]
        except ZmeshError as exc:
            reply = [False, [type(exc).__name__, str(exc)]]
        except Exception as exc:
            log.exception("request handler failed")
            reply = [False, ["RemoteError", f"{type(exc).__name__}: {exc}"]]
        peer = self._up_peer(name)
        if peer is not None:
            with contextlib.suppress(EncodeError):
                self._emit(peer, Kind.REPLY, ref, *reply)

    def _on_reply(self, peer: Peer, env: list[Any]) -> None:
        _, ref, ok, body = env
        entry = self._requests.get(ref)
        if entry is None or entry[0] != peer.name:
            return  # the caller gave up: a late reply is discarded
        future = entry[1]
        if future.done():
            return
        if ok:
            future.set_result(body)
        else:
            kind, text = body
            future.set_exception(_ERRORS.get(kind, RemoteError)(f"{peer.name}: {text}"))

    def _on_cast(self, peer: Peer, env: list[Any]) -> None:
        _, op, body = env
        handler = self._cast_handlers.get(op)
        if handler is None:
            self._refuse("unexpected_envelopes", f"cast {op!r} from {peer.name}")
            return
        handler(peer.name, body)

    # -- remote spawn -----------------------------------------------------------------------------

    async def spawn_remote(
        self, name: str, fn: Callable[..., Any] | str, args: tuple[Any, ...], timeout: float | None
    ) -> Pid:
        result = await self.request(name, "spawn", [reference(fn), list(args)], timeout)
        if type(result) is not Pid:
            raise RemoteError(f"node {name!r} answered spawn with {result!r}")
        return result

    def _handle_spawn(self, sender: str, body: Any) -> Pid:
        ref, args = body
        fn = resolve(ref, self.load)
        if not callable(fn):
            raise RemoteError(f"{ref!r} is not callable")
        return self.node.spawn(fn, *args)

    async def _handle_start(self, sender: str, body: Any) -> Pid:
        ref, args, name, timeout = body
        cls = resolve(ref, self.load)
        pid: Pid = await self.node._start_local(cls, list(args), name, float(timeout))
        return pid

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["peers"] = len(self.nodes())
        return out


def _ignore(peer: Peer, env: list[Any]) -> None:
    return None


def _check(value: object, kind: type) -> None:
    if type(value) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failed background connect is not an unhandled error


def _fail(future: asyncio.Future[str], address: str) -> None:
    if not future.done():
        future.set_exception(ConnectError(f"no answer from {address}"))


def _fail_with(attempt: _Outbound, message: str) -> None:
    if not attempt.future.done():
        attempt.future.set_exception(ConnectError(message))
