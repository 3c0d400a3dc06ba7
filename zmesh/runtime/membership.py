"""Membership: which peers are up, who hears about it, and how the mesh stays formed.

A session (`Peer`) comes up when its handshake completes and goes down on BYE, a
dropped connection, a frame gap or heartbeat silence; going down fires every link
and monitor across it and fails its pending requests. The tick loop sends heartbeats
and finds silent peers; the seed loop keeps joining seeds that are not connected; a
peer that comes up is told our other peers (PEERS), so the mesh is transitive.

Hidden peers (like Erlang's `-hidden`) are connected like any other but stay out of
the membership view: `nodes()` leaves them out, listeners hear of them only if they
ask, and PEERS never names them, so nobody connects to a hidden node but the ones it
connects to itself. A hidden node gossips nothing; the visible nodes it joins tell it
the cluster, and tell it again of each visible node that joins later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmesh.core.backoff import Backoff
from zmesh.core.protocol import Kind, check_type
from zmesh.core.ticks import until_next
from zmesh.errors import ConnectError
from zmesh.runtime.curve import parse_address
from zmesh.runtime.discovery_loop import discovery_loop
from zmesh.runtime.transport import OutLink, ZmqTransport
from zmesh.terms import NOCONNECTION

if TYPE_CHECKING:
    from zmesh.discovery.strategy import Strategy
    from zmesh.runtime.config import NodeConfig
    from zmesh.runtime.dist import Distribution

log = logging.getLogger("zmesh.dist")

NodeListener = Callable[[str, str], None]  # (event "up" | "down", node name)
_CUT_OFF_LINGER = 0.5  # seconds a BYE to a peer we cut off may take to leave
#: How long a leaving node waits for its peers to answer its BYE (a dead or paused
#: peer, or one that is leaving too, costs at most this).
BYE_WAIT = 0.25


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
    hidden: bool = False  # the peer is connected but out of the membership view
    # Traffic from this peer (out: the link counts frames and bytes); plain ints, as
    # they are bumped on the hot path.
    messages_in: int = 0
    messages_out: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    envelopes_in: int = 0


class Membership:
    """Sessions up and down, node listeners, heartbeats, seeds and PEERS gossip."""

    def __init__(self, dist: Distribution) -> None:
        self._dist = dist
        self._listeners: list[tuple[NodeListener, bool]] = []  # (listener, include_hidden)
        self._seeds: list[str] = []
        # Address of a peer lost without a goodbye -> (attempts so far, next retry time).
        self._lost: dict[str, tuple[int, float]] = {}
        self._backoff = Backoff(
            base=dist.config.reconnect_base, cap=dist.config.reconnect_cap, jitter=0.5
        )
        self.paused = False
        self.seeding = True  # discovery loops join what they find while this holds
        self._peer_lost = asyncio.Event()  # wakes the seed loop while every seed is up
        self._byes_awaited: set[str] = set()  # peers yet to answer our BYE (leaving)
        self._byes_answered = asyncio.Event()

    def start(self, seeds: Sequence[str], discovery: Sequence[Strategy] = ()) -> None:
        self._seeds = []
        for spec in seeds:
            name, address = parse_address(spec)
            if name is not None:
                self._dist._handshake.pin(address, name)
            self._seeds.append(address)
        self._dist.spawn_task(self._tick_loop())
        if self._seeds:
            self._dist.spawn_task(self._seed_loop())
        for strategy in discovery:
            self._dist.spawn_task(discovery_loop(self, strategy))

    def stop_seeding(self) -> None:
        """Stop joining seeds and discovered addresses (the node is leaving)."""
        self._seeds = []
        self.seeding = False
        self._peer_lost.set()

    # -- the view ---------------------------------------------------------------------------

    def nodes(self, *, include_hidden: bool = False) -> list[str]:
        """Names of the peers that are up, sorted; hidden ones only if `include_hidden`."""
        return sorted(
            name
            for name, peer in self._dist.sessions.items()
            if peer.up and (include_hidden or not peer.hidden)
        )

    def peer(self, name: str) -> Peer | None:
        """The session with `name` if it is up."""
        peer = self._dist.sessions.get(name)
        return peer if peer is not None and peer.up else None

    def subscribe(
        self, listener: NodeListener, *, include_hidden: bool = False
    ) -> Callable[[], None]:
        """Call `listener(event, name)` on every node "up" and "down" (of hidden peers too
        if `include_hidden`); returns an unsubscribe."""
        entry = (listener, include_hidden)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    # -- sessions up and down -----------------------------------------------------------------

    def mark_up(self, peer: Peer) -> None:
        """The handshake of `peer` completed: it replaces any older session of its name."""
        if peer.up:
            return
        dist = self._dist
        sessions = dist.sessions
        old = sessions.get(peer.name)
        if old is not None and old is not peer and old.up:
            # Superseded by a restart or a reconnect; the new session may share the link.
            self.forget(old, NOCONNECTION, keep_link=old.link is peer.link)
        peer.up = True
        peer.last_seen = asyncio.get_running_loop().time()
        sessions[peer.name] = peer
        dist._handshake.connected(peer.name)
        if not dist.node.hidden:
            self._gossip(peer)
        log.info(
            "%s: %snode %s up (%s)",
            dist.node.name, "hidden " if peer.hidden else "", peer.name, peer.address,
        )  # fmt: skip
        self._notify("up", peer)

    def _gossip(self, peer: Peer) -> None:
        """Tell a peer that came up our visible peers, and our hidden peers about it."""
        dist = self._dist
        up = [p for p in dist.sessions.values() if p.up and p is not peer]
        dist.emit(peer, Kind.PEERS, [[p.name, p.address] for p in up if not p.hidden])
        if not peer.hidden:
            news = [[peer.name, peer.address]]
            for other in up:
                if other.hidden:
                    dist.emit(other, Kind.PEERS, news)

    def forget(
        self,
        peer: Peer,
        reason: object,
        *,
        notify: bool = True,
        keep_link: bool = False,
        retry: bool = False,
        left: bool = False,
    ) -> None:
        """Drop a session: close its link, fire every link and monitor across it. With
        `retry` (lost without a goodbye), its address is retried forever with capped,
        jittered backoff; a goodbye (BYE) ends the retrying. `left`: the peer said BYE,
        which the log says (its links and monitors still fire with `reason`)."""
        dist = self._dist
        was_up = peer.up
        if retry and was_up and peer.address not in (dist.address, dist.advertised):
            now = asyncio.get_running_loop().time()
            self._lost[peer.address] = (0, now + self._backoff.delay(0, dist.node.env.random()))
        elif not retry:
            self._lost.pop(peer.address, None)
        peer.up = False
        if dist.sessions.get(peer.name) is peer:
            del dist.sessions[peer.name]
        if peer.identity and dist.trusted.get(peer.identity) is peer:
            del dist.trusted[peer.identity]
        if not keep_link:
            dist._handshake.close_link(peer.link)
        if not was_up:
            return
        if left:
            log.info(
                "%s: %snode %s left", dist.node.name, "hidden " if peer.hidden else "", peer.name
            )
        else:
            log.info("%s: node %s down (%s)", dist.node.name, peer.name, reason)
        self._peer_lost.set()
        dist._signals.peer_lost(peer.name)
        dist._requests.peer_lost(peer.name)
        if notify:
            self._notify("down", peer)

    def cut_off(self, peer: Peer, reason: object, *, left: bool = False) -> None:
        """Drop a session the peer still holds (its key was revoked, or it said BYE and
        waits for ours): tell it with a BYE, which gets `_CUT_OFF_LINGER` to leave, so
        it sees us down at once instead of after `stall_after` (ZeroMQ still answers
        its PINGs)."""
        if peer.up:
            self._dist.emit(peer, Kind.BYE)
            peer.link.close(_CUT_OFF_LINGER)
        self.forget(peer, reason, left=left)

    def _notify(self, event: str, peer: Peer) -> None:
        hidden = peer.hidden
        for listener, include_hidden in list(self._listeners):
            if hidden and not include_hidden:
                continue
            try:
                listener(event, peer.name)
            except Exception:
                log.exception("node listener %r failed", listener)

    def on_link_lost(self, link: OutLink) -> None:
        """The transport saw the connection under `link` close: its sessions are down."""
        for peer in list(self._dist.sessions.values()):
            if peer.link is link and peer.up:
                self._dist.counters["connections_lost"] += 1
                self.forget(peer, NOCONNECTION, retry=True)

    def on_peers(self, peer: Peer, env: list[Any]) -> None:
        dist = self._dist
        for name, address in env[1]:
            check_type(name, str)
            check_type(address, str)
            if name == dist.node.name or name in dist.sessions or dist._handshake.pending(address):
                continue
            dist._handshake.pin(address, name)
            dist._handshake.start_connect(address)

    def say_goodbye(self) -> None:
        """Send every up peer a BYE and stop joining seeds (the node is leaving)."""
        dist = self._dist
        up = [peer for peer in dist.sessions.values() if peer.up]
        for peer in up:
            dist.emit(peer, Kind.BYE)
        self.stop_seeding()
        self._byes_awaited = {peer.name for peer in up}
        self._byes_answered.clear()

    async def goodbyes_answered(self, timeout: float = BYE_WAIT) -> None:
        """Wait (at most `timeout`) until every peer told BYE has answered with its own.
        A leaving node closes its sockets only then: a peer's connection to us is not
        the one we send on, and its drop could otherwise be seen before the last frames
        we sent (service hand-offs, the BYE itself) were read."""
        if self._byes_awaited:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._byes_answered.wait(), timeout)
            if self._byes_awaited:
                self._dist.counters["byes_unanswered"] += len(self._byes_awaited)

    def on_bye(self, peer: Peer, env: list[Any]) -> None:
        dist = self._dist
        if dist._left:
            # The answer to our BYE (or the peer leaves too): it has read all we sent.
            # The session stays until `close`, which ends every session quietly.
            self._byes_awaited.discard(peer.name)
            if not self._byes_awaited:
                self._byes_answered.set()
            return
        # Answer, so the leaver knows we read everything it sent before its goodbye.
        self.cut_off(peer, NOCONNECTION, left=True)

    # -- timers ---------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """Heartbeats out, silent peers down, stale handshakes dropped: one timer per node
        on the node's timer grid, waking once a `tick` (every other tick with ZMTP
        liveness while no peer is lost; a peer lost without a goodbye is retried on
        time)."""
        dist = self._dist
        loop = asyncio.get_running_loop()
        cfg = dist.config
        beat_slot = -1
        while True:
            transport = dist._transport
            zmtp = isinstance(transport, ZmqTransport) and transport.faults is None
            if self._lost:
                period = min(cfg.tick, cfg.reconnect_base)
            else:
                # With "zmtp" nothing here is due sooner than a stall or a handshake
                # timeout: every other tick is enough.
                period = 2 * cfg.tick if zmtp else cfg.tick
            await asyncio.sleep(until_next(loop.time(), period))
            if self.paused:
                continue
            silence, quiet = _heartbeat_times(cfg, zmtp)
            now = loop.time()
            if zmtp:
                # Node heartbeats (they only find a stuck event loop) go out together, on
                # the ticks that cross a multiple of `quiet`, to every link idle for a
                # tick: co-located nodes share the grid, so a node receives its peers'
                # heartbeats in one burst, not one wake-up each. The socket monitors,
                # which wake the loop themselves, are read then too (a safety net).
                slot = int(now // quiet)
                beat, beat_slot = slot != beat_slot, slot
                idle_for = cfg.tick
            else:
                beat, idle_for = True, quiet
            for peer in list(dist.sessions.values()):
                if not peer.up:
                    continue
                if beat:
                    peer.link.poll()
                    if not peer.up:
                        continue  # the monitor found its connection closed
                if now - peer.last_seen > silence:
                    dist.counters["heartbeat_timeouts"] += 1
                    self.forget(peer, NOCONNECTION, retry=True)
                elif beat and now - peer.link.last_flush >= idle_for:
                    dist.signal(peer, Kind.HEARTBEAT)
            dist._handshake.expire(now)
            if self._lost:
                self._retry_lost(now)

    def _retry_lost(self, now: float) -> None:
        """Connect again to peers lost without a goodbye, each after its backoff delay;
        forget those that are back."""
        dist = self._dist
        connected = self.connected_addresses()
        for address, (attempts, due) in list(self._lost.items()):
            if address in connected:
                del self._lost[address]
            elif due <= now and not dist._handshake.pending(address):
                delay = self._backoff.delay(attempts + 1, dist.node.env.random())
                self._lost[address] = (attempts + 1, now + delay)
                dist._handshake.start_connect(address)

    def connected_addresses(self) -> set[str]:
        """Addresses (advertised and dialled) of the peers that are up."""
        return {
            a for p in self._dist.sessions.values() if p.up for a in (p.address, p.link.address)
        }

    def join_missing(self, addresses: Sequence[str]) -> None:
        """Start a handshake with each of `addresses` not connected, pending or our own;
        a failed attempt is reported to the node's seed-error listeners."""
        dist = self._dist
        connected = self.connected_addresses()
        for spec in addresses:
            name, address = parse_address(spec)
            if (
                address in (dist.address, dist.advertised)
                or address in connected
                or dist._handshake.pending(address)
            ):
                continue
            if name is not None:
                dist._handshake.pin(address, name)
            attempt = dist._handshake.start_connect(address)
            attempt.add_done_callback(functools.partial(self._seed_done, address))

    async def _seed_loop(self) -> None:
        """Keep joining seeds that are not connected, so start order does not matter;
        while all of them are up, sleep until a peer goes down."""
        dist = self._dist
        while self._seeds:
            self.join_missing(self._seeds)
            connected = self.connected_addresses() | {dist.address, dist.advertised}
            if all(seed in connected for seed in self._seeds):
                self._peer_lost.clear()
                await self._peer_lost.wait()
            else:
                await asyncio.sleep(dist.config.seed_retry)

    def _seed_done(self, address: str, attempt: asyncio.Future[str]) -> None:
        if attempt.cancelled():
            return  # the node is closing
        error = attempt.exception()
        if isinstance(error, ConnectError):
            self._dist.node._seed_failed(address, error)

    def pause(self) -> None:
        """Freeze the node's networking: nothing read, sent or timed out (like SIGSTOP)."""
        self.paused = True
        if self._dist._transport is not None:
            self._dist._transport.pause()

    def resume(self) -> None:
        """Undo `pause`; peers that gave up on us meanwhile are found down from our side too."""
        dist = self._dist
        if dist._transport is not None:
            dist._transport.resume()
        loop = asyncio.get_running_loop()
        # Time spent paused is not the peers' silence: restart their clocks.
        for peer in dist.sessions.values():
            peer.last_seen = max(peer.last_seen, loop.time() - dist.config.tick)
        self.paused = False


def _heartbeat_times(cfg: NodeConfig, zmtp: bool) -> tuple[float, float]:
    """(silence after which a peer is down, idle time of a link before it carries a node
    heartbeat) for `cfg.liveness`. With "zmtp", ZeroMQ's heartbeats find a stopped or
    cut-off peer within `down_after`; the node's own only find a stuck event loop. That
    needs the ZeroMQ transport with no faults injected above its sockets (`zmtp`):
    elsewhere (zmesh.testing's faults, a simulated network) the node's heartbeats do it
    all, as with "heartbeat"."""
    if cfg.liveness == "zmtp" and zmtp:
        stall = max(cfg.stall_after, cfg.down_after)
        return stall, stall / 2
    return cfg.down_after, cfg.tick * 0.5
