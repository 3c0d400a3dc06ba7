"""The cookie handshake: how an outbound link or an unknown identity becomes a session.

Each node has a DEALER to each peer; frames arrive on the ROUTER tagged with the
sender's random DEALER identity:

    A -> B  HELLO(name, creation, address, nA, hidden_A)
    B -> A  CHALLENGE(name, creation, address, nA, nB, proof_B(nA), hidden_B)
    A -> B  AUTH(nB, proof_A(nB))
    B -> A  WELCOME

B's proof shows A that B knows the cookie, A's proof shows B; then both sides are up.
Each side learns from the other's `hidden` flag whether to keep it out of its
membership view (see membership.py).

An identity becomes trusted only after its owner proved the cookie over a nonce we
chose; frames from any other identity are dropped and counted.

With CURVE on, every link is a CURVE client pinned to the server key of the node it
expects at that address: the name comes from `NAME@ADDRESS` (a seed or `connect`),
from PEERS gossip, or from an authenticated HELLO. A plain address whose node is not
known yet cannot be reached (a client must know the server's key before it speaks).
The name a HELLO or CHALLENGE claims must be the one the sender's key is bound to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmesh.core import protocol as proto
from zmesh.core.protocol import Kind, check_type
from zmesh.errors import ConnectError, ConnectReason, DecodeError
from zmesh.runtime.curve import parse_address
from zmesh.runtime.membership import Peer
from zmesh.runtime.transport import OutLink
from zmesh.terms import NOCONNECTION

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution

_UNTRUSTED_MAX = 4096  # handshake frames are small; anything larger from a stranger is hostile
# What a refusal code means to the caller of `connect`; a code we do not know comes from
# a peer that speaks another revision of the protocol.
_REFUSALS: dict[object, ConnectReason] = {
    proto.REFUSE_COOKIE: "bad_cookie",
    proto.REFUSE_NAME: "name_clash",
    proto.REFUSE_VERSION: "version",
    proto.REFUSE_BUSY: "busy",
}


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
    hidden: bool


class Handshake:
    """Connects to addresses and answers handshakes; owns the outbound links by address."""

    def __init__(self, dist: Distribution, cookie: bytes) -> None:
        self._dist = dist
        self._cookie = cookie
        self._links_by_addr: dict[str, OutLink] = {}
        self._outbound: dict[bytes, _Outbound] = {}  # by the nonce of our HELLO
        self._inbound: dict[bytes, _Inbound] = {}  # by the stranger's identity
        self._connecting: dict[str, asyncio.Future[str]] = {}
        self._names: dict[str, str] = {}  # address -> the node expected there (CURVE pins)

    def pin(self, address: str, name: str) -> None:
        """Expect the node `name` (and, with CURVE, its listed key) at `address`."""
        self._names[address] = name

    # -- connecting -----------------------------------------------------------------------------

    async def connect(self, address: str, timeout: float | None) -> str:
        """Join the node at `address` (or `NAME@address`); its name, or ConnectError."""
        dist = self._dist
        name, address = parse_address(address)
        if name is not None:
            self.pin(address, name)
        timeout = dist.config.connect_timeout if timeout is None else timeout
        for peer in dist.sessions.values():
            if peer.up and peer.address == address:
                return peer.name
        pending = self._connecting.get(address)
        if pending is None:
            pending = self.start_connect(address)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), timeout)
        except TimeoutError:
            raise _timed_out(address, self._links_by_addr.get(self._link_key(address))) from None

    def pending(self, address: str) -> bool:
        """Whether a connect to `address` is under way."""
        return address in self._connecting

    def start_connect(self, address: str) -> asyncio.Future[str]:
        """Send HELLO to `address` (or `NAME@address`); the future gets the peer's name or
        a ConnectError."""
        dist = self._dist
        name, address = parse_address(address)
        if name is not None:
            self.pin(address, name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        future.add_done_callback(_consume)
        try:
            link = self.link_to(address)
        except ConnectError as exc:
            future.set_exception(exc)
            return future
        self._connecting[address] = future
        nonce = dist.node.env.token_bytes(proto.NONCE_BYTES)
        attempt = _Outbound(address, link, nonce, future)
        self._outbound[nonce] = attempt
        me = dist.node
        dist.emit_link(
            link, Kind.HELLO, proto.VERSION, me.name, me.creation, dist.advertised, nonce, me.hidden
        )

        def finished(_: object) -> None:
            self._outbound.pop(nonce, None)
            if self._connecting.get(address) is future:
                del self._connecting[address]
            if future.cancelled() or future.exception() is not None:
                half = dist.sessions.get(attempt.name)
                if half is not None and not half.up and half.link is link:
                    dist._membership.forget(half, NOCONNECTION)
                self.close_orphan(link)

        future.add_done_callback(finished)
        loop.call_later(dist.config.connect_timeout, _fail, future, address, link)
        return future

    def connected(self, name: str) -> None:
        """A session with `name` came up: every connect that reached it succeeded."""
        for attempt in list(self._outbound.values()):
            if attempt.name == name and not attempt.future.done():
                attempt.future.set_result(name)

    # -- links by address -----------------------------------------------------------------------

    def _link_key(self, address: str, name: str | None = None) -> str:
        if self._dist.allow is None:
            return address
        return f"{name or self._names.get(address)}@{address}"

    def link_to(self, address: str, name: str | None = None) -> OutLink:
        """The link to `address`; with CURVE, pinned to the key of `name` (default: the
        node expected there). ConnectError("security") if that key is not known."""
        key = self._link_key(address, name)
        link = self._links_by_addr.get(key)
        if link is None or link.closed:
            transport = self._dist._transport
            assert transport is not None
            server_key = self._server_key(address, name)
            link = self._links_by_addr[key] = transport.open(address, server_key)
        return link

    def _server_key(self, address: str, name: str | None) -> bytes | None:
        allow = self._dist.allow
        if allow is None:
            return None
        name = name or self._names.get(address)
        if name is None:
            message = (
                f"CURVE is on: the server key at {address} is not known;"
                f" write NAME@{address} with NAME's certificate in the allow-list"
            )
            raise ConnectError(message, "security")
        key = allow.by_name.get(name)
        if key is None:
            raise ConnectError(f"{name!r} ({address}) is not on the allow-list", "security")
        return key

    def close_link(self, link: OutLink) -> None:
        for key, known in list(self._links_by_addr.items()):
            if known is link:
                del self._links_by_addr[key]
        link.close()

    def on_link_refused(self, link: OutLink, why: str) -> None:
        """The security handshake under `link` failed: the connects over it fail now."""
        self._dist.refuse("security_handshakes_failed", f"{link.address}: {why}")
        for attempt in list(self._outbound.values()):
            if attempt.link is link:
                _fail_with(attempt, f"{attempt.address} refused the connection: {why}", "security")

    def close_orphan(self, link: OutLink) -> None:
        """Close `link` unless a session, a connect or an inbound handshake still uses it.

        (A connect that times out while the peer's own HELLO is being answered on the
        same link used to close it: the session then came up on a closed link, sent
        nothing, and the peer dropped it after `down_after`.)"""
        if any(p.link is link for p in self._dist.sessions.values()):
            return
        if any(a.link is link for a in self._outbound.values()):
            return
        if any(h.link is link for h in self._inbound.values()):
            return
        self.close_link(link)

    def expire(self, now: float) -> None:
        """Drop the handshakes that strangers left unfinished past their deadline."""
        for identity, pending in list(self._inbound.items()):
            if pending.deadline < now:
                del self._inbound[identity]
                self._dist.counters["handshakes_expired"] += 1
                self.close_orphan(pending.link)

    # -- inbound ---------------------------------------------------------------------------------

    def on_untrusted(self, identity: bytes, data: bytes, user: str | None = None) -> None:
        """A frame from an identity that has not proved the cookie: handshake kinds only.

        `user` is the node name the sender's CURVE key is bound to (None without CURVE)."""
        dist = self._dist
        if len(data) > _UNTRUSTED_MAX:
            dist.refuse("unauthenticated", f"{len(data)}-byte frame before the handshake")
            return
        try:
            envelopes = proto.decode_frame(dist.codec, data)
        except DecodeError as exc:
            dist.refuse("bad_frames", f"before the handshake: {exc}")
            return
        for i in range(1, len(envelopes)):
            trusted = dist.trusted.get(identity)
            if trusted is not None:
                # An envelope ahead in this frame made the identity trusted (an AUTH
                # that the peer flushed with its WELCOME and first casts, both sides
                # having connected at once): the rest is the session's own traffic.
                dist.deliver(trusted, identity, envelopes, i, len(data))
                return
            env = envelopes[i]
            if env[0] in proto.HANDSHAKE_KINDS:
                self.handle(identity, env, user)
            else:
                dist.refuse("unauthenticated", f"kind {env[0]} before the handshake")
        trusted = dist.trusted.get(identity)
        if trusted is not None:  # this frame made the identity trusted: count from it
            trusted.next_seq = envelopes[0][1] + 1

    def handle(self, identity: bytes, env: list[Any], user: str | None = None) -> None:
        """One handshake envelope; a malformed one is refused and counted."""
        kind = env[0]
        try:
            if kind == Kind.HELLO:
                self._on_hello(identity, env, user)
            elif kind == Kind.CHALLENGE:
                self._on_challenge(identity, env, user)
            elif kind == Kind.AUTH:
                self._on_auth(identity, env)
            else:
                self._on_refuse(env)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._dist.refuse("bad_handshakes", f"kind {kind}: {exc!r}")

    def _on_hello(self, identity: bytes, env: list[Any], user: str | None) -> None:
        dist = self._dist
        _, version, name, creation, address, nonce = env[:6]
        check_type(name, str)
        check_type(creation, int)
        check_type(address, str)
        check_type(nonce, bytes)
        if dist.allow is not None:
            if name != user:
                # A listed key presenting another node's name: refused, told so at the
                # address it gave (over a link pinned to its own key).
                dist.refuse("curve_wrong_names", f"the key of {user!r} says it is {name!r}")
                text = f"your key is bound to the name {user!r}, not {name!r}"
                if user is not None:
                    link = self.link_to(address, user)
                    dist.emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_NAME, text)
                    asyncio.get_running_loop().call_later(1.0, self.close_orphan, link)
                return
            # The name is proven; the address is only claimed: it never replaces a pin.
            self._names.setdefault(address, name)
        existing = dist.sessions.get(name)
        # A node we are connected to (same name, same address): answer on the link it
        # already trusts. Anyone else, an impostor included, is answered at `address`.
        same = existing is not None and existing.up and existing.address == address
        link = existing.link if same and existing is not None else self.link_to(address, name)
        reply_nonce = dist.node.env.token_bytes(proto.NONCE_BYTES)
        if version != proto.VERSION:
            text = f"protocol version {version} is not {proto.VERSION}"
            dist.emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_VERSION, text)
            return
        (hidden,) = env[6:]
        check_type(hidden, bool)
        clash = self._name_clash(name, creation, address)
        if clash:
            dist.emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_NAME, clash)
            dist.counters["name_clashes"] += 1
            return
        if len(self._inbound) >= dist.config.max_pending_handshakes:
            dist.emit_link(link, Kind.REFUSE, nonce, proto.REFUSE_BUSY, "too many handshakes")
            return
        deadline = asyncio.get_running_loop().time() + dist.config.handshake_timeout
        self._inbound[identity] = _Inbound(
            name, creation, address, reply_nonce, deadline, link, hidden
        )
        me = dist.node
        my_proof = proto.proof(self._cookie, b"challenge", nonce, me.name, name)
        dist.emit_link(
            link, Kind.CHALLENGE, proto.VERSION, me.name, me.creation, dist.advertised,
            nonce, reply_nonce, my_proof, me.hidden,
        )  # fmt: skip

    def _name_clash(self, name: str, creation: int, address: str) -> str:
        dist = self._dist
        if name == dist.node.name:
            return f"the name {name!r} is taken by the node at {dist.advertised}"
        existing = dist.sessions.get(name)
        if existing is not None and existing.up and existing.address != address:
            return f"the name {name!r} is taken by the node at {existing.address}"
        return ""

    def _on_challenge(self, identity: bytes, env: list[Any], user: str | None) -> None:
        dist = self._dist
        _, version, name, creation, address, our_nonce, their_nonce, their_proof = env[:8]
        check_type(name, str)
        check_type(creation, int)
        check_type(address, str)
        check_type(our_nonce, bytes)
        check_type(their_nonce, bytes)
        attempt = self._outbound.get(our_nonce)
        if attempt is None or attempt.future.done():
            dist.refuse("unexpected_handshakes", f"challenge from {name!r} with no hello")
            return
        if dist.allow is not None and name != user:
            dist.refuse("curve_wrong_names", f"the key of {user!r} says it is {name!r}")
            message = f"{attempt.address} answered as {name!r} with the key of {user!r}"
            _fail_with(attempt, message, "security")
            return
        pinned = self._names.get(attempt.address)
        if dist.allow is not None and pinned is not None and pinned != name:
            message = f"{attempt.address} answered as {name!r}, expected {pinned!r}"
            _fail_with(attempt, message, "security")
            return
        me = dist.node
        expected = proto.proof(self._cookie, b"challenge", our_nonce, name, me.name)
        if version != proto.VERSION:
            message = f"{address} speaks protocol {version}, we speak {proto.VERSION}"
            _fail_with(attempt, message, "version")
            return
        (hidden,) = env[8:]
        check_type(hidden, bool)
        if not proto.check_proof(expected, their_proof):
            dist.counters["bad_cookies"] += 1
            dist.emit_link(attempt.link, Kind.REFUSE, their_nonce, proto.REFUSE_COOKIE, "")
            _fail_with(attempt, f"{address} ({name}) has a different cookie", "bad_cookie")
            return
        if name == me.name:
            message = f"{address} is a node named {name!r} too: names must be unique"
            _fail_with(attempt, message, "name_clash")
            return
        existing = dist.sessions.get(name)
        if existing is not None and existing.up and existing.creation == creation:
            # Already connected under another address spelling: nothing to do.
            attempt.future.set_result(name)
            return
        clash = self._name_clash(name, creation, address)
        if clash:
            # Another live node holds the name: refused as its HELLO would be, instead
            # of the impostor's session replacing the real one.
            dist.counters["name_clashes"] += 1
            dist.emit_link(attempt.link, Kind.REFUSE, their_nonce, proto.REFUSE_NAME, clash)
            _fail_with(attempt, f"{attempt.address} answered as {name!r}: {clash}", "name_clash")
            return
        attempt.name = name
        peer = Peer(name, creation, address, attempt.link, identity, hidden=hidden)
        dist.trusted[identity] = peer
        if existing is None or not existing.up:
            dist.sessions[name] = peer
        my_proof = proto.proof(self._cookie, b"auth", their_nonce, me.name, name)
        dist.emit_link(attempt.link, Kind.AUTH, their_nonce, my_proof)

    def _on_auth(self, identity: bytes, env: list[Any]) -> None:
        dist = self._dist
        _, our_nonce, their_proof = env
        pending = self._inbound.pop(identity, None)
        if pending is None or our_nonce != pending.nonce:
            dist.refuse("unexpected_handshakes", "auth with no matching hello")
            return
        expected = proto.proof(self._cookie, b"auth", pending.nonce, pending.name, dist.node.name)
        if not proto.check_proof(expected, their_proof):
            dist.refuse("bad_cookies", f"{pending.name!r} at {pending.address} failed the cookie")
            self.close_orphan(pending.link)
            return
        link = pending.link
        if link.closed:
            # We answered on the link of a session that went down before this AUTH came
            # (and `forget` closed it): the session comes up on the current link to the
            # peer instead of on a closed one that sends nothing.
            link = self.link_to(pending.address, pending.name)
        peer = Peer(
            pending.name, pending.creation, pending.address, link, identity,
            hidden=pending.hidden,
        )  # fmt: skip
        existing = dist.sessions.get(peer.name)
        if existing is not None and not existing.up and existing.identity:
            dist.trusted.pop(existing.identity, None)
        dist.trusted[identity] = peer
        dist.emit(peer, Kind.WELCOME)
        dist._membership.mark_up(peer)

    def _on_refuse(self, env: list[Any]) -> None:
        dist = self._dist
        _, nonce, code, text = env
        attempt = self._outbound.get(nonce) if isinstance(nonce, bytes) else None
        if attempt is None:
            for identity, pending in list(self._inbound.items()):
                if pending.nonce == nonce:  # the connecting side refused our challenge
                    del self._inbound[identity]
                    dist.refuse("refused_handshakes", f"{pending.name!r}: {code!r}")
                    self.close_orphan(pending.link)
                    return
            dist.refuse("unexpected_handshakes", f"refusal {code!r} matching no hello")
            return
        if code == proto.REFUSE_COOKIE:
            message = f"{attempt.address} refused us: the cookies differ"
        elif code == proto.REFUSE_NAME:
            message = f"{attempt.address} refused us: name clash: {text}"
        elif code == proto.REFUSE_VERSION:
            message = f"{attempt.address} refused us: protocol mismatch: {text}"
        else:
            message = f"{attempt.address} refused us: {code}: {text}"
        reason = _REFUSALS.get(code, "version") if type(code) is str else "version"
        _fail_with(attempt, message, reason)

    def on_welcome(self, peer: Peer, env: list[Any]) -> None:
        """The side we challenged accepted our AUTH: the session is up."""
        self._dist._membership.mark_up(peer)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failed background connect is not an unhandled error


def _timed_out(address: str, link: OutLink | None) -> ConnectError:
    if getattr(link, "unsecured", False) and getattr(link, "curve", False):
        message = (
            f"{address} accepted the TCP connection but the CURVE handshake never finished:"
            " a wrong server key for the name given, or the peer does not use CURVE"
        )
        return ConnectError(message, "security")
    return ConnectError(f"no answer from {address}", "unreachable")


def _fail(future: asyncio.Future[str], address: str, link: OutLink) -> None:
    if not future.done():
        future.set_exception(_timed_out(address, link))


def _fail_with(attempt: _Outbound, message: str, reason: ConnectReason) -> None:
    if not attempt.future.done():
        attempt.future.set_exception(ConnectError(message, reason))
