"""HMAC-SHA256 on CPython's own SHA-256: the standard library's digests, bit for bit."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.mac import BLOCK, hmac_sha256, same_digest

# Keys around the block size take each of RFC 2104's paths: padded, exact, hashed first.
keys = st.one_of(
    st.binary(max_size=2 * BLOCK + 1), st.binary(min_size=BLOCK - 1, max_size=BLOCK + 1)
)


@given(keys, st.binary(max_size=1000))
def test_the_mac_is_the_standard_librarys(key: bytes, msg: bytes) -> None:
    assert hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_rfc_4231_test_case_2() -> None:
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == expected


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_same_digest_is_equality(a: bytes, b: bytes) -> None:
    assert same_digest(a, b) == (a == b)
    assert same_digest(a, a)
