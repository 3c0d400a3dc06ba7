"""HMAC-SHA256 (RFC 2104) on CPython's own SHA-256, so that a node never maps OpenSSL.

`hmac` and `hashlib` load OpenSSL's libcrypto on import: about 4 MiB resident in every
node, for one MAC per handshake. CPython builds its own SHA-256 in (`_sha2` since 3.12,
`_sha256` before); where it is left out, OpenSSL's serves. The digests are the standard
library's bit for bit (a hypothesis property checks it).
"""

from __future__ import annotations

import importlib
from _operator import _compare_digest  # what `hmac.compare_digest` is
from collections.abc import Callable
from typing import Any, Final


def _builtin_sha256() -> Callable[..., Any]:
    for module in ("_sha2", "_sha256"):  # CPython 3.12+, 3.11
        try:
            constructor: Callable[..., Any] = importlib.import_module(module).sha256
        except (ImportError, AttributeError):  # pragma: no cover - a build without it
            continue
        return constructor
    from hashlib import sha256  # pragma: no cover

    return sha256  # pragma: no cover


_SHA256: Final = _builtin_sha256()
BLOCK: Final = 64  # SHA-256's block size, bytes
_INNER: Final = bytes(x ^ 0x36 for x in range(256))
_OUTER: Final = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """The HMAC-SHA256 of `msg` under `key` (32 bytes), as `hmac.digest(key, msg, "sha256")`."""
    if len(key) > BLOCK:
        key = _SHA256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    inner = _SHA256(key.translate(_INNER))
    inner.update(msg)
    outer = _SHA256(key.translate(_OUTER))
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def same_digest(a: bytes, b: bytes) -> bool:
    """`a == b` in time that does not depend on where they differ."""
    return bool(_compare_digest(a, b))
