"""An asyncio event loop on a virtual clock, for deterministic simulation.

`VirtualTimeLoop.time()` is virtual: it starts at 0 and moves only when no callback is
ready, straight to the next timer, so an idle minute of heartbeats costs the callbacks
it runs and nothing else. The loop has no selector and performs no I/O: a real socket
(`add_reader`, `create_connection`, ...), an executor thread or a wake-up from another
thread raises `SimulationError` instead of blocking on the wall clock. A run in which
every task waits and no timer is due raises `Deadlock` rather than hang.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from zmesh.errors import ZmeshError


class SimulationError(ZmeshError, RuntimeError):
    """Something real (a socket, a thread, a file descriptor) was used inside a simulation."""


class Deadlock(SimulationError):
    """Every task waits, no timer is due and nothing outside can wake them: stuck forever."""


class _VirtualSelector:
    """Stands where the selector would: 'waiting' `timeout` seconds advances the clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop = self._loop
        if loop._violation is not None:
            raise SimulationError(loop._violation)
        if timeout is None:
            raise Deadlock(
                f"at virtual time {loop.time():.6f} s every task waits and no timer is due"
            )
        if timeout > 0:
            scheduled = loop._scheduled  # type: ignore[attr-defined]
            due = scheduled[0]._when if scheduled else loop._now + timeout
            # Land exactly on the timer, not a rounding error short of it.
            loop._now = max(loop._now, min(due, loop._now + timeout))
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An event loop whose clock is virtual and that refuses every kind of real I/O."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._violation: str | None = None
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _refuse(self, what: str) -> SimulationError:
        return SimulationError(
            f"{what} inside a simulation: only the simulated network and clock exist here"
        )

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> Any:
        owner = getattr(self, "_thread_id", None)
        if owner is not None and threading.get_ident() != owner:
            self._violation = "call_soon_threadsafe from another thread"
            raise self._refuse("a wake-up from another thread")
        return self.call_soon(callback, *args, context=context)

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        raise self._refuse(f"running {func!r} on an executor thread")

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise self._refuse(f"watching file descriptor {fd!r}")

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise self._refuse(f"watching file descriptor {fd!r}")

    def remove_reader(self, fd: Any) -> bool:
        raise self._refuse(f"watching file descriptor {fd!r}")

    def remove_writer(self, fd: Any) -> bool:
        raise self._refuse(f"watching file descriptor {fd!r}")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("a name lookup")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("a real connection")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("a real server socket")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("a real datagram socket")

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        pass
