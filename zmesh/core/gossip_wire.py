"""Gossip announcements, authenticated: encode, and check what was heard (no I/O).

A packet is `msgpack([version, name, address, timestamp, nonce]) + HMAC-SHA256` with
a key derived from the cookie, so only holders of the cookie can announce. A packet
is accepted once: its timestamp must be within `max_skew` seconds of the receiver's
clock and its nonce unseen within that window, so a captured packet replayed later
or twice is refused. Every refusal has a reason, which the node counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from zmesh.core.mac import hmac_sha256, same_digest

VERSION = 1
TAG_BYTES = 32
NONCE_BYTES = 16
MAX_PACKET = 1024
#: Refusal reasons, as counted in `node.stats()` under `gossip_<reason>`.
MALFORMED, FORGED, STALE, REPLAYED = "malformed", "forged", "stale", "replayed"


def gossip_key(cookie: bytes) -> bytes:
    """The announcement key: derived, so the cookie itself never keys two protocols."""
    return hmac_sha256(cookie, b"zmesh gossip v1")


def encode(key: bytes, name: str, address: str, now: float, nonce: bytes) -> bytes:
    """An announcement of `name` at `address`, stamped `now` (wall-clock seconds)."""
    body: bytes = msgpack.packb([VERSION, name, address, now, nonce])
    return body + hmac_sha256(key, body)


@dataclass
class Verifier:
    """Accepts each authentic, fresh announcement once; remembers nonces for the window."""

    key: bytes
    max_skew: float = 10.0
    _seen: dict[bytes, float] = field(default_factory=dict)

    def check(self, packet: bytes, now: float) -> tuple[str, str] | str:
        """(name, address) of an accepted announcement, else the refusal reason."""
        if not TAG_BYTES < len(packet) <= MAX_PACKET:
            return MALFORMED
        body, tag = packet[:-TAG_BYTES], packet[-TAG_BYTES:]
        if not same_digest(tag, hmac_sha256(self.key, body)):
            return FORGED
        try:
            version, name, address, stamp, nonce = msgpack.unpackb(body)
        except Exception:  # authentic but not ours to read: a newer format, say
            return MALFORMED
        if (
            version != VERSION
            or not isinstance(name, str)
            or not isinstance(address, str)
            or not isinstance(stamp, int | float)
            or not isinstance(nonce, bytes)
            or len(nonce) != NONCE_BYTES
        ):
            return MALFORMED
        if abs(now - stamp) > self.max_skew:
            return STALE
        self._forget(now)
        if nonce in self._seen:
            return REPLAYED
        self._seen[nonce] = float(stamp)
        return name, address

    def _forget(self, now: float) -> None:
        # A nonce older than the window is refused as stale anyway: drop it. Nonces are
        # stored roughly in time order, so the scan stops at the first fresh one.
        for nonce, stamp in list(self._seen.items()):
            if now - stamp <= self.max_skew:
                break
            del self._seen[nonce]
