"""What a node takes from the world outside its own logic: the wall clock, randomness,
its incarnation number and its transport. Production uses the real ones
(`REAL`); the deterministic simulation (`zmesh.testing.run_simulation`) passes a
virtual clock, a seeded random source and an in-memory network instead.

Monotonic time is not here: the node reads it from its event loop (`loop.time()`), which
the simulation replaces as a whole.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zmesh.runtime.config import NodeConfig
    from zmesh.runtime.transport import Faults, FrameHandler, LostHandler, Transport

    class NodeTransport(Transport, Protocol):
        """The transport a node runs on: `Transport`, bound to one listen address."""

        faults: Faults | None

        def bind(self, listen: str) -> str: ...
        def pause(self) -> None: ...
        def resume(self) -> None: ...


class Environment(Protocol):
    """The node's clock, random source and transport factory."""

    def wall_time(self) -> float:
        """Seconds since the epoch (registry stamps, uptime)."""
        ...

    def creation(self) -> int:
        """A new incarnation number, larger than any this environment gave before."""
        ...

    def random(self) -> float:
        """A float in [0, 1) (backoff jitter)."""
        ...

    def token_bytes(self, n: int) -> bytes:
        """`n` unpredictable bytes (handshake nonces)."""
        ...

    def transport(
        self, config: NodeConfig, on_frame: FrameHandler, on_lost: LostHandler, **options: Any
    ) -> NodeTransport:
        """A transport for one node; `options` are ZmqTransport's keyword arguments."""
        ...


class RealEnvironment:
    """The system clock, the OS's randomness, and ZeroMQ."""

    wall_time: Callable[[], float] = staticmethod(time.time)
    random: Callable[[], float] = staticmethod(random.random)
    token_bytes: Callable[[int], bytes] = staticmethod(os.urandom)

    def creation(self) -> int:
        return _next_creation()

    def transport(
        self, config: NodeConfig, on_frame: FrameHandler, on_lost: LostHandler, **options: Any
    ) -> NodeTransport:
        from zmesh.runtime.transport import ZmqTransport

        return ZmqTransport(config, on_frame, on_lost, **options)


REAL = RealEnvironment()

_last_creation = 0


def _next_creation() -> int:
    """Milliseconds since the epoch, but always above the last one this process made:
    a node restarted within the same millisecond still gets a new incarnation."""
    global _last_creation
    _last_creation = max(time.time_ns() // 1_000_000, _last_creation + 1)
    return _last_creation
