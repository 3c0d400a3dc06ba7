"""The host's routable address, for a node that binds a wildcard without `advertise`.

Found the way most servers do it: "connect" a UDP socket towards a public address
(no packet is sent; the kernel only picks the outgoing interface and its source
address). A loopback-only or unrouted host has none, and the node refuses to start.
"""

from __future__ import annotations

import socket

_PROBE = ("192.0.2.1", 9)  # TEST-NET-1 (RFC 5737): never answered, never routed beyond


def routable_ip() -> str | None:
    """The IPv4 address of the interface that routes outwards, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE)
            ip = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip
