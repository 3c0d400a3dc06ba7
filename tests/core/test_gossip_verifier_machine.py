"""The gossip Verifier under an adversary: announcements, forgeries, replays, nonces
reused in new packets, and a clock that moves on. Whatever the order, a packet is
accepted only if authentic and fresh, and a nonce is never accepted twice while any
packet carrying it could still be fresh."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, rule

from zmesh.core import gossip_wire as gw

KEY = gw.gossip_key(b"the cookie")
OTHER = gw.gossip_key(b"not the cookie")
SKEW = 10.0


@dataclass(frozen=True)
class Sent:
    packet: bytes
    stamp: float
    nonce: bytes
    authentic: bool


skews = st.floats(min_value=-2 * SKEW, max_value=2 * SKEW, allow_nan=False)
nonces = st.binary(min_size=gw.NONCE_BYTES, max_size=gw.NONCE_BYTES)


class VerifierMachine(RuleBasedStateMachine):
    sent = Bundle("sent")

    @initialize()
    def start(self) -> None:
        self.now = 1_000.0
        self.verifier = gw.Verifier(KEY, max_skew=SKEW)
        self.accepted: dict[bytes, float] = {}  # nonce -> stamp of the packet accepted

    def _send(self, key: bytes, skew: float, nonce: bytes) -> Sent:
        stamp = self.now + skew
        packet = gw.encode(key, "n", "tcp://10.0.0.1:7000", stamp, nonce)
        return Sent(packet, stamp, nonce, key == KEY)

    @rule(target=sent, skew=skews, nonce=nonces)
    def announce(self, skew: float, nonce: bytes) -> Sent:
        return self._send(KEY, skew, nonce)

    @rule(target=sent, skew=skews, nonce=nonces)
    def forge(self, skew: float, nonce: bytes) -> Sent:
        return self._send(OTHER, skew, nonce)

    @rule(target=sent, earlier=sent, skew=skews)
    def reuse_a_nonce(self, earlier: Sent, skew: float) -> Sent:
        return self._send(KEY, skew, earlier.nonce)

    @rule(dt=st.floats(min_value=0, max_value=2 * SKEW, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(item=sent)
    def deliver(self, item: Sent) -> None:
        got = self.verifier.check(item.packet, self.now)
        if not item.authentic:
            assert got == gw.FORGED
        elif abs(self.now - item.stamp) > SKEW:
            assert got == gw.STALE
        elif item.nonce in self.accepted:
            first = self.accepted[item.nonce]
            if self.now - first <= SKEW:  # the first packet could still be replayed
                assert got == gw.REPLAYED
            else:  # forgotten or not: refusing a reused nonce late is allowed too
                assert got in (gw.REPLAYED, ("n", "tcp://10.0.0.1:7000"))
                if got != gw.REPLAYED:
                    self.accepted[item.nonce] = item.stamp
        else:
            assert got == ("n", "tcp://10.0.0.1:7000")
            self.accepted[item.nonce] = item.stamp


TestVerifierMachine = VerifierMachine.TestCase
