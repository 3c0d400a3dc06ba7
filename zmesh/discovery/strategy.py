"""The `Strategy` interface: an async source of candidate addresses, polled forever."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Strategy(Protocol):
    """A way to find peers. The node calls `candidates()` again and again (every
    `interval` seconds, or `NodeConfig.seed_retry` if None) and joins every address
    returned that it is not connected to. An exception from `candidates()` is logged
    once per change of its message and the poll goes on; it never stops the node.

    A strategy that needs the node (its name, cookie, advertised address) may also
    define `async def start(self, node)` and `async def stop(self)`: the node calls
    them around the polls (gossip opens and closes its socket there)."""

    #: How the strategy names itself in logs, e.g. "range:10.0.0.0/28:7000".
    name: str
    #: Seconds between polls; None uses `NodeConfig.seed_retry`.
    interval: float | None

    async def candidates(self) -> Sequence[str]:
        """The addresses to join now (`tcp://HOST:PORT`, optionally `NAME@`-prefixed)."""
        ...
