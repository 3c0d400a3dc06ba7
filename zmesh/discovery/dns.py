"""`dns:NAME:PORT`: poll the A/AAAA records of a name (a Kubernetes headless Service)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence


class Dns:
    """Join `tcp://IP:PORT` for every address NAME resolves to, through the system's
    (stdlib) resolver, again on every poll; a failed lookup is logged once per change."""

    interval: float | None = None

    def __init__(self, name: str, port: int) -> None:
        self.host, self.port = name, int(port)
        self.name = f"dns:{name}:{port}"

    async def candidates(self) -> Sequence[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )
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
