"""One exception hierarchy: everything zmesh raises derives from `ZmeshError`."""

from __future__ import annotations

from typing import Literal


class ZmeshError(Exception):
    """Base class of every error zmesh raises."""


class DecodeError(ZmeshError):
    """Bytes that are not a valid zmesh term or envelope (malformed, truncated, over a limit)."""


class EncodeError(ZmeshError):
    """A value that cannot be sent: an unsupported type or over a size limit."""


ConnectReason = Literal["bad_cookie", "name_clash", "version", "busy", "unreachable", "security"]


class ConnectError(ZmeshError):
    """A peer could not be joined; `reason` says why: "bad_cookie" (the cookies differ),
    "name_clash" (the name is taken, or the peer has ours), "version" (protocol
    mismatch), "busy" (too many handshakes in progress there), "unreachable" (no
    answer in time) or "security" (CURVE on one side only, a key not on the allow-list,
    a wrong server key, or a key presenting another node's name)."""

    def __init__(self, message: str, reason: ConnectReason = "unreachable") -> None:
        super().__init__(message)
        self.reason: ConnectReason = reason


class NoProc(ZmeshError):
    """The target process does not exist, died during the request, or its node was lost."""


class CallError(NoProc):
    """The server exited while handling the call; `reason` is its exit reason."""

    def __init__(self, target: object, reason: object) -> None:
        super().__init__(f"{target} exited during the call: {reason!r}")
        self.target = target
        self.reason = reason


class NameTaken(ZmeshError):
    """`start(..., name=)` found the name registered to another process (`owner`)."""

    def __init__(self, name: str, owner: object) -> None:
        super().__init__(f"the name {name!r} is registered to {owner}")
        self.name = name
        self.owner = owner


class ReceiveTimeout(ZmeshError, TimeoutError):
    """`Process.receive` found no matching message within its timeout."""


class CallTimeout(ZmeshError, TimeoutError):
    """A `call` got no reply within its timeout."""


class ProcessExited(ZmeshError):
    """The calling process was taken down by an exit signal; `reason` says why."""

    def __init__(self, reason: object) -> None:
        super().__init__(f"process exited: {reason!r}")
        self.reason = reason


class QueueFull(ZmeshError):
    """The outgoing queue to a peer is full: backpressure, the message was not queued."""


class NodeDown(ZmeshError):
    """The node a request was addressed to is not connected."""


class NoQuorum(ZmeshError):
    """A `quorum=True` service cannot run here: this node's side of the cluster does not
    hold a strict majority of its known members."""


class RemoteError(ZmeshError):
    """A remote node refused a request (an unknown module, a failed spawn, ...)."""


class EmptyRing(ZmeshError, LookupError):
    """A key lookup on a `HashRing` that has no nodes."""


class KeyTypeError(ZmeshError, TypeError):
    """A `HashRing` key that is not a str, bytes, int or tuple of those (bool is refused)."""


class ConfigError(ZmeshError, ValueError):
    """An invalid option value; the message names the value and what is accepted."""


class DataError(ZmeshError, ValueError):
    """A malformed replicated-data message from a peer (a map delta or state, a store
    request); refused and counted, never applied."""


class Unavailable(ZmeshError):
    """Fewer replicas of the partitioned store answered than the read or write needs
    (`r` or `w`) within its timeout; a write may still have reached some of them."""
