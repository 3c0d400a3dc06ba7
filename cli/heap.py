"""Give the heap memory that start-up freed back to the OS.

Importing modules and wiring sockets leaves free chunks scattered through the C heap;
glibc keeps them, so an idle node's resident memory stays at its start-up peak. One
`malloc_trim(0)` once the node has settled returns those pages (about 1 MiB for an
idle `zmesh join`). It walks the whole heap (about 50 us per MiB), so it runs once,
not periodically: a node that later grows large is not stalled by it.
"""

from __future__ import annotations

import asyncio

#: Seconds after the node is up: its first peers are usually connected by then.
SETTLE = 5.0


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS; False where there is no glibc."""
    import ctypes  # here, not at import: a node that never trims does not load it

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    trim(0)
    return True


def release_when_settled(delay: float = SETTLE) -> asyncio.TimerHandle:
    """Schedule `release_free_heap` on the running loop `delay` seconds from now."""
    return asyncio.get_running_loop().call_later(delay, release_free_heap)
