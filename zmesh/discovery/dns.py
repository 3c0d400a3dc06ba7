"""`dns:NAME:PORT`: poll the A/AAAA records of a name (a Kubernetes headless Service)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence
from typing import Any

AddrInfo = list[tuple[Any, ...]]


class Dns:
    """Join `tcp://IP:PORT` for every address NAME resolves to, through the system's
    (stdlib) resolver, again on every poll; a failed lookup is logged once per change.

    The resolver is the host's: `/etc/hosts`, then the servers in `/etc/resolv.conf`
    with its search domains (as `getaddrinfo` does). A lookup runs on a daemon thread,
    at most one at a time: a slow or unreachable DNS server delays the next poll, never
    the node's exit (asyncio's default executor would wait for the lookup to end)."""

    interval: float | None = None

    def __init__(self, name: str, port: int) -> None:
        self.host, self.port = name, int(port)
        self.name = f"dns:{name}:{port}"
        self._lookup: asyncio.Future[AddrInfo] | None = None

    async def candidates(self) -> Sequence[str]:
        if self._lookup is None or self._lookup.done():
            self._lookup = self._start_lookup()
        infos = await asyncio.shield(self._lookup)
        found = []
        for family, *_, sockaddr in infos:
            ip = str(sockaddr[0])
            address = (
                f"tcp://[{ip}]:{self.port}"
                if family == socket.AF_INET6
                else f"tcp://{ip}:{self.port}"
            )
            if address not in found:
                found.append(address)
        return found

    def _start_lookup(self) -> asyncio.Future[AddrInfo]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AddrInfo] = loop.create_future()

        def settle(result: AddrInfo | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or [])

        def lookup() -> None:
            result, error = None, None
            try:
                result = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except Exception as exc:  # handed to the poll, which logs it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        # Retrieved here, so a lookup that fails after its poll was cancelled is quiet.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        threading.Thread(target=lookup, name=f"zmesh {self.name}", daemon=True).start()
        return future
