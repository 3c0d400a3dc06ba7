"""Free loopback ports for nodes that must bind a known address."""

from __future__ import annotations

import socket


def free_block(width: int) -> int:
    """A first port of `width` consecutive free loopback ports."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + width >= 65535:
            continue
        held = []
        try:
            for port in range(base, base + width):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port block")
