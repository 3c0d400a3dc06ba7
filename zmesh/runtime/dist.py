"""Distribution: a node's connection to the cluster, behind one facade.

The work is split along its seams; this module owns what they share and the hot
paths (sending a message, dispatching an inbound frame):

    handshake.py   the cookie handshake: connect, HELLO / CHALLENGE / AUTH / REFUSE
    membership.py  sessions up and down, nodes(), listeners, heartbeats, seeds, gossip
    signals.py     links, monitors and exit signals across nodes
    requests.py    requests and casts between nodes, remote spawn and start

The parts share the session tables kept here: `sessions` (by peer name, up or
connecting) and `trusted` (by the DEALER identity that proved the cookie). The
facade's methods are the parts' own bound methods, and the dispatch table maps each
envelope kind straight to its handler, so no message pays for the split.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from zmesh.core import protocol as proto
from zmesh.core.advertise import advertised_address, check_advertise, is_wildcard
from zmesh.core.codec import Codec, Limits
from zmesh.core.protocol import Kind
from zmesh.errors import ConfigError, DecodeError
from zmesh.runtime.advertise import routable_ip
from zmesh.runtime.cookie import default_cookie
from zmesh.runtime.curve import AllowList, Curve, KeyPair, load_keypair
from zmesh.runtime.handshake import Handshake
from zmesh.runtime.loader import import_all
from zmesh.runtime.membership import Membership, NodeListener, Peer
from zmesh.runtime.requests import CastHandler, RequestHandler, Requests
from zmesh.runtime.signals import Signals
from zmesh.runtime.transport import OutLink
from zmesh.terms import NOCONNECTION, Pid

if TYPE_CHECKING:
    from zmesh.discovery.strategy import Strategy
    from zmesh.runtime.environment import NodeTransport
    from zmesh.runtime.node import Node

__all__ = ["CastHandler", "Distribution", "NodeListener", "Peer", "RequestHandler"]

log = logging.getLogger("zmesh.dist")

# What a handler raises on a malformed envelope: refused and counted, never propagated.
# How often the allow-list's files are checked for changes, seconds.
_ALLOW_POLL = 1.0
_BAD_INPUT = (ValueError, TypeError, KeyError, IndexError, AttributeError, DecodeError)


class Distribution:
    """The node's connection to the cluster (owned by `Node`, started and stopped by it)."""

    def __init__(
        self,
        node: Node,
        listen: str,
        cookie: bytes | None,
        load: Sequence[str],
        curve: Curve | None = None,
        advertise: str | None = None,
    ) -> None:
        self.node = node
        self.config = node.config
        self._listen = listen
        cookie = cookie if cookie is not None else default_cookie()
        if not cookie:
            raise ConfigError("the cookie must not be empty")
        #: This node's CURVE keys and allow-list; None on a plain (cookie-only) node.
        self.keys: KeyPair | None = None
        self.allow: AllowList | None = None
        if curve is not None:
            self.keys = load_keypair(curve.secret_key_file)
            self.allow = AllowList(curve.allow)
            if self.keys.name != node.name:
                raise ConfigError(
                    f"the key {curve.secret_key_file} is bound to the name {self.keys.name!r},"
                    f" not {node.name!r}: name the node after its key"
                )
        self.load = frozenset(load)
        import_all(self.load)
        self.codec = Codec(Limits(max_size=self.config.max_message_size))
        self.address = ""  # bound
        #: What peers are told to dial (HELLO, CHALLENGE, PEERS): see zmesh.core.advertise.
        self.advertised = ""
        self._advertise = check_advertise(advertise) if advertise is not None else None
        self._routable: str | None = None
        if self._advertise is None and is_wildcard(listen):
            self._routable = routable_ip()
            advertised_address(listen, None, self._routable)  # refuse now, before binding
        self._transport: NodeTransport | None = None
        self.sessions: dict[str, Peer] = {}  # up or connecting, by name
        self.trusted: dict[bytes, Peer] = {}  # by the DEALER identity that proved the cookie
        self._tasks: set[asyncio.Task[Any]] = set()
        self._left = False
        self.counters: Counter[str] = Counter()
        self._handshake = handshake = Handshake(self, cookie)
        self._membership = membership = Membership(self)
        self._signals = signals = Signals(self)
        self._requests = requests = Requests(self)

        # The facade's API: the parts' own methods, so a call costs nothing extra.
        self.connect = handshake.connect
        self.nodes = membership.nodes
        self.peer = membership.peer
        self.subscribe = membership.subscribe
        self.pause = membership.pause
        self.resume = membership.resume
        self.send_link = signals.send_link
        self.send_unlink = signals.send_unlink
        self.send_exit = signals.send_exit
        self.send_monitor = signals.send_monitor
        self.send_demonitor = signals.send_demonitor
        self.send_down = signals.send_down
        self.send_call, self.send_reply = signals.send_call, signals.send_reply
        self.call_done = signals.call_done
        self.handle = requests.handle
        self.handle_cast = requests.handle_cast
        self.cast = requests.cast
        self.broadcast = requests.broadcast
        self.request = requests.request
        self.spawn_remote = requests.spawn_remote

        self._dispatch: dict[int, Callable[[Peer, list[Any]], None]] = {
            Kind.SEND: self._on_send,
            **signals.handlers(),
            Kind.REQUEST: requests.on_request,
            Kind.REPLY: requests.on_reply,
            Kind.CAST: requests.on_cast,
            Kind.HEARTBEAT: _ignore,
            Kind.WELCOME: handshake.on_welcome,
            Kind.PEERS: membership.on_peers,
            Kind.BYE: membership.on_bye,
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, seeds: Sequence[str], discovery: Sequence[Strategy] = ()) -> None:
        self._transport = self.node.env.transport(
            self.config,
            self._on_frame,
            self._on_link_lost,
            keys=self.keys,
            allow=self.allow,
            on_refused=self._handshake.on_link_refused,
            on_zap_refused=self._on_zap_refused,
        )
        self.address = self._transport.bind(self._listen)
        self.advertised = advertised_address(self.address, self._advertise, self._routable)
        self._membership.start(seeds, discovery)
        if self.allow is not None:
            self.spawn_task(self._watch_allow_list())

    # -- CURVE ----------------------------------------------------------------------------

    def _on_zap_refused(self, reason: str, detail: str) -> None:
        self.refuse(reason, f"refused at the CURVE handshake: {detail}")

    def reload_allow_list(self) -> list[str]:
        """Re-read the allow-list; disconnect the peers no longer on it (their names)."""
        if self.allow is None:
            return []
        gone = self.allow.reload()
        dropped = []
        for peer in list(self.sessions.values()):
            if peer.name in gone:
                self.refuse("curve_revoked", f"{peer.name}: its key is no longer allowed")
                self._membership.cut_off(peer, NOCONNECTION)
                dropped.append(peer.name)
        return sorted(dropped)

    async def _watch_allow_list(self) -> None:
        assert self.allow is not None
        while True:
            await asyncio.sleep(_ALLOW_POLL)
            if self.allow.changed():
                self.reload_allow_list()

    def spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` as a task that `close` cancels and awaits."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def leave(self) -> None:
        """Tell every peer we are going, so they see us down at once, and wait for their
        answers (see `Membership.say_goodbye`)."""
        self._membership.say_goodbye()
        # Peers forget us on BYE: what our processes' exits would announce is moot.
        self._left = True
        await self._membership.goodbyes_answered()

    async def close(self, linger: float = 0.2) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in list(self.sessions.values()):
            self._membership.forget(peer, NOCONNECTION, notify=False)
        self._requests.close()
        if self._transport is not None:
            # Give BYE frames a moment to leave; a dead peer costs at most this.
            await self._transport.close(linger=linger)
            self._transport = None

    def _on_link_lost(self, link: OutLink) -> None:
        self._membership.on_link_lost(link)

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["peers"] = len(self.nodes())
        return out

    def peer_stats(self) -> dict[str, dict[str, int]]:
        """Traffic per up session (hidden peers included), by peer name."""
        return {
            name: {
                "messages_in": peer.messages_in,
                "messages_out": peer.messages_out,
                "bytes_in": peer.bytes_in,
                "bytes_out": peer.link.bytes_out,
                "frames_in": peer.frames_in,
                "frames_out": peer.link.frames_out,
                "envelopes_in": peer.envelopes_in,
            }
            for name, peer in sorted(self.sessions.items())
            if peer.up
        }

    # -- outbound envelopes -----------------------------------------------------------------------

    def emit(self, peer: Peer, *fields: object) -> None:
        """Queue an envelope for `peer` (nothing once the node has left)."""
        self.emit_link(peer.link, *fields)

    def signal(self, peer: Peer, *fields: object) -> None:
        """Emit a signal (link, monitor, ...): not latency-critical, so it joins the next
        frame to the peer instead of costing one of its own."""
        if not self._left:
            peer.link.enqueue(proto.encode_envelope(self.codec, *fields), urgent=False)

    def emit_link(self, link: OutLink, *fields: object) -> None:
        if not self._left:
            link.enqueue(proto.encode_envelope(self.codec, *fields))

    def up_peer(self, name: str, creation: int | None = None) -> Peer | None:
        """The session with `name` if it is up (and of incarnation `creation`, if given)."""
        peer = self.sessions.get(name)
        if peer is None or not peer.up or (creation is not None and peer.creation != creation):
            return None
        return peer

    def send(self, dest: Pid, message: object) -> None:
        peer = self.sessions.get(dest.node)
        if peer is None or not peer.up or peer.creation != dest.creation or self._left:
            self.counters["dropped_sends"] += 1  # at-most-once: nobody to deliver to
            return
        payload = self.codec.encode(message)
        peer.link.enqueue(proto.send_envelope(dest.id, dest.creation, payload))
        peer.messages_out += 1

    # -- inbound frames -------------------------------------------------------------------------

    def _on_frame(self, identity: bytes, parts: list[bytes], user: str | None = None) -> None:
        if len(parts) != 1:
            self.refuse("bad_frame_count", f"{len(parts)} parts from {identity.hex()[:8]}")
            return
        data = parts[0]
        peer = self.trusted.get(identity)
        allow = self.allow
        if allow is not None:
            # Second line of defence behind the ZAP handler: every frame must come over a
            # connection admitted for a key that is still listed, under its own name.
            if user is None or user not in allow.by_name:
                self.refuse("curve_unauthenticated", f"frame from key {user!r}: not admitted")
                return
            if peer is not None and peer.name != user:
                self.refuse("curve_wrong_names", f"{user!r} sent as {peer.name!r}")
                return
        if peer is None:
            if not self._left:  # a leaving node takes no new peers (nor counts their frames)
                self._handshake.on_untrusted(identity, data, user)
            return
        try:
            envelopes = proto.decode_frame(self.codec, data)
        except DecodeError as exc:
            self.refuse("bad_frames", f"from {peer.name}: {exc}")
            return
        seq = envelopes[0][1]
        if peer.next_seq >= 0 and seq != peer.next_seq and peer.up:
            # Frames were lost while we thought the connection up: FIFO without loss no
            # longer holds, so the session ends (at-most-once) and a reconnect resyncs.
            self.refuse("frame_gaps", f"from {peer.name}: frame {seq}, expected {peer.next_seq}")
            self._membership.forget(peer, NOCONNECTION)
            return
        self.deliver(peer, identity, envelopes, 1, len(data))

    def deliver(
        self, peer: Peer, identity: bytes, envelopes: list[Any], start: int, size: int
    ) -> None:
        """Dispatch `envelopes[start:]` of a frame (`envelopes[0]` its SEQ) from `peer`.

        `start` is past 1 when a handshake envelope earlier in the same frame is what
        made `identity` trusted: the peer flushes its AUTH, WELCOME and first casts
        together when both sides connect at once."""
        seq = envelopes[0][1]
        peer.next_seq = seq + 1
        peer.last_seen = asyncio.get_running_loop().time()
        peer.frames_in += 1
        peer.bytes_in += size
        peer.envelopes_in += len(envelopes) - start
        dispatch = self._dispatch
        for env in envelopes[start:]:
            handler = dispatch.get(env[0])
            if handler is None:
                if env[0] in proto.HANDSHAKE_KINDS:
                    # Both sides connected at once: this identity is already trusted
                    # through our handshake while its own is still finishing. The
                    # handshake may replace the session: later envelopes use the new one.
                    self._handshake.handle(identity, env)
                    peer = self.trusted.get(identity, peer)
                    peer.next_seq = seq + 1
                else:
                    self.refuse("unexpected_envelopes", f"kind {env[0]} from {peer.name}")
                continue
            try:
                handler(peer, env)
            except _BAD_INPUT as exc:
                self.refuse("bad_envelopes", f"kind {env[0]} from {peer.name}: {exc!r}")
            if not peer.up and env[0] == Kind.BYE:
                break

    def _on_send(self, peer: Peer, env: list[Any]) -> None:
        _, pid_id, creation, payload = env
        peer.messages_in += 1
        node = self.node
        if creation != node.creation:
            return
        proc = node._procs.get(pid_id)
        if proc is None:
            return
        try:
            message = self.codec.decode(payload)
        except DecodeError as exc:
            self.refuse("bad_payloads", f"from {peer.name}: {exc}")
            return
        proc.deliver(message)

    def refuse(self, counter: str, detail: str) -> None:
        """Count a refused input; log the first few of each kind, then every 1000th."""
        self.counters[counter] += 1
        n = self.counters[counter]
        if n <= 5 or n % 1000 == 0:
            log.warning("%s: refused (%s, #%d): %s", self.node.name, counter, n, detail)


def _ignore(peer: Peer, env: list[Any]) -> None:
    return None
