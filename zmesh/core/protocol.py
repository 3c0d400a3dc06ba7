"""The wire protocol: envelope kinds, the cookie handshake's proofs, and frame decoding.

A frame is one ZeroMQ message: a concatenation of msgpack-encoded envelopes, each an
array `[kind, ...fields]`. Batching is concatenation, so a busy peer sends one frame
for many envelopes. The handshake never sends the cookie: each side proves it knows
the cookie with an HMAC over a fresh nonce chosen by the other side.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

import msgpack

from zmesh.core.codec import Codec
from zmesh.core.mac import hmac_sha256, same_digest
from zmesh.errors import DecodeError

#: 2: HELLO and CHALLENGE carry the sender's `hidden` flag. 3: CALL and CALL_REPLY
#: (a GenServer call in one round trip). The fields up to and including the nonces keep
#: their places in every version, so a node can read the version of any HELLO or
#: CHALLENGE and refuse a mismatch instead of dropping it.
VERSION: Final = 3
NONCE_BYTES: Final = 16


class Kind(IntEnum):
    """Envelope kinds. Handshake kinds are the only ones accepted from an unknown peer.

    `hidden` (a bool) marks a node that is connected but stays out of its peers'
    membership view: not in their `nodes()`, their ring or the PEERS they gossip.
    """

    HELLO = 1  # [HELLO, version, name, creation, address, nonce, hidden]
    # [CHALLENGE, version, name, creation, address, their_nonce, nonce, proof, hidden]
    CHALLENGE = 2
    AUTH = 3  # [AUTH, their_nonce, proof]
    WELCOME = 4  # [WELCOME]
    REFUSE = 5  # [REFUSE, nonce, reason_code, text]
    HEARTBEAT = 6  # [HEARTBEAT]
    BYE = 7  # [BYE]: leaving; a peer that is not leaving too answers with its own BYE
    PEERS = 8  # [PEERS, [[name, address], ...]]: visible nodes to connect to
    SEQ = 9  # [SEQ, n]: first in every frame; n counts the link's frames from 0
    SEND = 10  # [SEND, dest_id, dest_creation, payload_bytes]
    LINK = 11  # [LINK, from_pid, to_pid]
    UNLINK = 12  # [UNLINK, from_pid, to_pid]
    EXIT = 13  # [EXIT, from_pid, to_pid, reason, linked]
    MONITOR = 14  # [MONITOR, ref, watcher_pid, target_pid]
    DEMONITOR = 15  # [DEMONITOR, ref, watcher_pid, target_pid]
    DOWN = 16  # [DOWN, ref, watcher_pid, target_pid, reason]
    # [CALL, dest_id, dest_creation, caller_id, ref_id, request_bytes]: the GenServer call
    # `("$gen_call", (caller, ref), request)` for the destination, the caller and the ref
    # being of the sending node; it also monitors the destination for the caller under
    # the ref (OTP's alias plus implicit monitor): a DOWN with that ref if it dies first,
    # or at once if the request cannot be decoded; the monitor ends with the reply (or a
    # DEMONITOR on timeout).
    CALL = 17
    # [CALL_REPLY, dest_id, dest_creation, ref_id, value_bytes]: `(ref, value)` for the
    # caller (the ref being of the receiving node); ends the CALL's implicit monitor.
    CALL_REPLY = 18
    REQUEST = 20  # [REQUEST, ref, op, body]
    REPLY = 21  # [REPLY, ref, ok, body]
    CAST = 22  # [CAST, op, body]: a one-way system message for a subsystem


_SEQ_PACKER: Final = msgpack.Packer()

HANDSHAKE_KINDS: Final = frozenset({Kind.HELLO, Kind.CHALLENGE, Kind.AUTH, Kind.REFUSE})
_KINDS: Final = frozenset(int(k) for k in Kind)

# Refusal codes: the connecting side reports each as the same `ConnectError.reason`.
REFUSE_COOKIE: Final = "bad_cookie"
REFUSE_NAME: Final = "name_clash"
REFUSE_VERSION: Final = "version"
REFUSE_BUSY: Final = "busy"


def proof(cookie: bytes, role: bytes, nonce: bytes, prover: str, verifier: str) -> bytes:
    """HMAC-SHA256 proving knowledge of `cookie` for `nonce`, bound to both names and a role
    (so a proof can be neither replayed in the other direction nor to another node)."""
    msg = b"\x00".join((role, nonce, prover.encode(), verifier.encode()))
    return hmac_sha256(cookie, msg)


def check_proof(expected: bytes, given: object) -> bool:
    return isinstance(given, bytes) and same_digest(expected, given)


def frame(envelopes: list[bytes], seq: int) -> bytes:
    """Join encoded envelopes into one frame: a msgpack array header, the link's frame
    number `seq` as a SEQ envelope, then the envelopes (encoded once, when sent).

    The receiver checks the numbers: a gap means frames were lost on a connection it
    still thought up, so that session can no longer promise FIFO without loss.
    """
    envelopes = [_SEQ_PACKER.pack([Kind.SEQ, seq]), *envelopes]
    n = len(envelopes)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 0x10000:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"".join(envelopes)


def decode_frame(codec: Codec, data: bytes) -> list[list[Any]]:
    """All envelopes in a frame, each a non-empty list starting with a known kind.

    Raises DecodeError for malformed or truncated msgpack, trailing bytes, a frame
    that is not an array, an envelope that is not an array, or an unknown kind.
    """
    envelopes = codec.decode(data)
    if type(envelopes) is not list or not envelopes:
        raise DecodeError("a frame must be a non-empty array of envelopes")
    head = envelopes[0]
    if type(head) is not list or len(head) != 2 or head[0] != Kind.SEQ or type(head[1]) is not int:
        raise DecodeError("a frame must start with its sequence number")
    for env in envelopes:
        if type(env) is not list or not env or type(env[0]) is not int or env[0] not in _KINDS:
            raise DecodeError(f"not an envelope: {str(env)[:60]}")
    return envelopes


_SEND: Final = int(Kind.SEND)
_ENVELOPE_PACKER: Final = msgpack.Packer()


def send_envelope(dest_id: int, dest_creation: int, payload: bytes) -> bytes:
    """A SEND envelope for an already encoded message: its fields are plain ints and
    bytes, so a bare Packer does (no codec hooks, no limits to check again)."""
    return _ENVELOPE_PACKER.pack([_SEND, dest_id, dest_creation, payload])  # type: ignore[no-any-return]


_CALL: Final = int(Kind.CALL)
_CALL_REPLY: Final = int(Kind.CALL_REPLY)


def call_envelope(
    dest_id: int, dest_creation: int, caller_id: int, ref_id: int, payload: bytes
) -> bytes:
    """A CALL envelope for an already encoded request (nested like SEND's message, so a
    request the receiver refuses costs that call alone, not the frame it came in)."""
    fields = [_CALL, dest_id, dest_creation, caller_id, ref_id, payload]
    return _ENVELOPE_PACKER.pack(fields)  # type: ignore[no-any-return]


def reply_envelope(dest_id: int, dest_creation: int, ref_id: int, payload: bytes) -> bytes:
    """A CALL_REPLY envelope for an already encoded value."""
    return _ENVELOPE_PACKER.pack([_CALL_REPLY, dest_id, dest_creation, ref_id, payload])  # type: ignore[no-any-return]


def check_type(value: object, kind: type) -> None:
    """Refuse an envelope field that is not exactly of type `kind` (TypeError, which the
    receiver counts as a bad envelope)."""
    if type(value) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")


def encode_envelope(codec: Codec, *fields: object) -> bytes:
    """One envelope, encoded; raises EncodeError for a field that cannot be sent."""
    return codec.encode(list(fields))
