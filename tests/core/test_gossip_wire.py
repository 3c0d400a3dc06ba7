"""Gossip announcements: only cookie holders announce; each packet counts once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zmesh.core import gossip_wire as gw

KEY = gw.gossip_key(b"cookie")
NONCE = b"n" * 16


def test_an_authentic_fresh_announcement_is_accepted_once_then_refused_as_replayed() -> None:
    v = gw.Verifier(KEY)
    packet = gw.encode(KEY, "a", "tcp://127.0.0.1:7000", 100.0, NONCE)
    assert v.check(packet, 100.5) == ("a", "tcp://127.0.0.1:7000")
    assert v.check(packet, 101.0) == gw.REPLAYED


def test_another_cookie_is_refused_as_forged() -> None:
    other = gw.encode(gw.gossip_key(b"other"), "a", "tcp://h:1", 100.0, NONCE)
    assert gw.Verifier(KEY).check(other, 100.0) == gw.FORGED


def test_an_old_or_future_packet_is_refused_as_stale() -> None:
    v = gw.Verifier(KEY, max_skew=10.0)
    assert v.check(gw.encode(KEY, "a", "tcp://h:1", 100.0, NONCE), 111.0) == gw.STALE
    assert v.check(gw.encode(KEY, "a", "tcp://h:1", 100.0, NONCE), 89.0) == gw.STALE


def test_truncated_packets_are_malformed_or_forged() -> None:
    packet = gw.encode(KEY, "a", "tcp://h:1", 100.0, NONCE)
    v = gw.Verifier(KEY)
    assert v.check(packet[:10], 100.0) == gw.MALFORMED
    assert v.check(packet[:-1], 100.0) == gw.FORGED


def test_an_authentic_packet_with_a_wrong_shape_is_malformed() -> None:
    import hashlib
    import hmac

    import msgpack

    body = msgpack.packb([1, "a", 5, 100.0, NONCE])
    packet = body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert gw.Verifier(KEY).check(packet, 100.0) == gw.MALFORMED


@given(st.binary(max_size=200))
def test_random_bytes_are_never_accepted(junk: bytes) -> None:
    assert isinstance(gw.Verifier(KEY).check(junk, 100.0), str)


def test_a_flipped_byte_anywhere_is_refused() -> None:
    packet = gw.encode(KEY, "a", "tcp://h:1", 100.0, NONCE)
    for i in range(len(packet)):
        bad = bytearray(packet)
        bad[i] ^= 0x01
        assert gw.Verifier(KEY).check(bytes(bad), 100.0) in (gw.FORGED, gw.MALFORMED)
