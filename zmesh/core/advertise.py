"""Bind versus advertise, without I/O: which address peers are told to dial.

A node binds `listen` and tells peers `advertise`. With no `advertise`, a specific
bound address is its own advertisement; a wildcard (`tcp://0.0.0.0:P`, `tcp://*:P`,
`tcp://[::]:P`) is not dialable from elsewhere, so the runtime substitutes the
host's routable address (see `zmesh.runtime.advertise`) or refuses.
"""

from __future__ import annotations

from zmesh.errors import ConfigError

WILDCARD_HOSTS = frozenset({"0.0.0.0", "*", "::", "[::]"})


def split_tcp(address: str) -> tuple[str, int] | None:
    """(host, port) of a `tcp://HOST:PORT` address; None for other transports."""
    if not address.startswith("tcp://"):
        return None
    host, sep, port = address[len("tcp://") :].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"bad tcp address {address!r}: expected tcp://HOST:PORT")
    return host, int(port)


def is_wildcard(address: str) -> bool:
    """Whether `address` binds every interface (so it cannot be dialled as written)."""
    parts = split_tcp(address)
    return parts is not None and parts[0] in WILDCARD_HOSTS


def check_advertise(address: str) -> str:
    """Refuse an advertised address a peer could not dial (a wildcard, port 0, junk)."""
    parts = split_tcp(address) if address.startswith("tcp://") else None
    if address.startswith("tcp://"):
        assert parts is not None
        host, port = parts
        if host in WILDCARD_HOSTS or not 0 < port < 65536:
            raise ConfigError(
                f"cannot advertise {address!r}: give the host and port peers dial, "
                "e.g. tcp://10.0.0.5:7000"
            )
        return address
    if address.startswith(("ipc://", "inproc://")):
        return address
    raise ConfigError(f"cannot advertise {address!r}: expected tcp://HOST:PORT or ipc://PATH")


def advertised_address(bound: str, advertise: str | None, routable: str | None) -> str:
    """What peers are told: `advertise` if given, else `bound` with a wildcard host
    replaced by `routable` (the host's routable IP, or None when none was found)."""
    if advertise is not None:
        return check_advertise(advertise)
    if not is_wildcard(bound):
        return bound
    parts = split_tcp(bound)
    assert parts is not None
    if routable is None:
        raise ConfigError(
            f"bound the wildcard {bound!r} and found no routable address of this host: "
            f"pass --advertise tcp://HOST:{parts[1]} (or $ZMESH_ADVERTISE, "
            "Node(advertise=...)) with the address peers should dial"
        )
    host = f"[{routable}]" if ":" in routable else routable
    return f"tcp://{host}:{parts[1]}"
