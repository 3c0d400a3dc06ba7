"""`gossip[:GROUP:PORT]`: authenticated UDP multicast announcements.

Each poll, the node multicasts `(name, advertised address)` signed with a key derived
from the cookie (see `zmesh.core.gossip_wire`) and joins every address it heard
lately. Forged, malformed, stale and replayed packets are ignored and counted in
`node.stats()` as `gossip_forged`, `gossip_malformed`, `gossip_stale`,
`gossip_replayed`. The multicast interface is the advertised host when it is an
IPv4 address (so `127.0.0.1` gossips on loopback), else the default one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zmesh.core import gossip_wire
from zmesh.core.advertise import split_tcp
from zmesh.core.discovery_spec import GOSSIP_GROUP, GOSSIP_PORT

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

#: Heard addresses not heard again for this long are no longer candidates.
FORGET_AFTER = 30.0


class Gossip:
    """Announce this node on `group:port` and join the nodes heard there."""

    interval: float | None = None

    def __init__(self, group: str = GOSSIP_GROUP, port: int = GOSSIP_PORT) -> None:
        self.group, self.port = group, port
        self.name = f"gossip:{group}:{port}"
        self._node: Node | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._verifier: gossip_wire.Verifier | None = None
        self._key = b""
        self._heard: dict[str, float] = {}  # address -> when (monotonic)

    async def start(self, node: Node) -> None:
        """Open the multicast socket (called by the node before the first poll)."""
        assert node._dist is not None
        self._node = node
        self._key = gossip_wire.gossip_key(node._dist._handshake._cookie)
        self._verifier = gossip_wire.Verifier(self._key)
        sock = self._socket(_interface(node.advertised or ""))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), sock=sock)
        self._transport = transport

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _socket(self, interface: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("", self.port))
            mreq = socket.inet_aton(self.group) + socket.inet_aton(interface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def candidates(self) -> Sequence[str]:
        node = self._node
        if node is None or self._transport is None:
            raise RuntimeError("gossip is not started")
        packet = gossip_wire.encode(
            self._key, node.name, node.advertised or "", time.time(), os.urandom(16)
        )
        self._transport.sendto(packet, (self.group, self.port))
        now = time.monotonic()
        for address, when in list(self._heard.items()):
            if now - when > FORGET_AFTER:
                del self._heard[address]
        return list(self._heard)

    def _heard_packet(self, packet: bytes) -> None:
        assert self._verifier is not None and self._node is not None
        got = self._verifier.check(packet, time.time())
        if isinstance(got, str):
            dist = self._node._dist
            if dist is not None:
                dist.counters[f"gossip_{got}"] += 1
            return
        name, address = got
        if name != self._node.name:
            self._heard[address] = time.monotonic()


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, gossip: Gossip) -> None:
        self.gossip = gossip

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.gossip._heard_packet(data)


def _interface(advertised: str) -> str:
    parts = split_tcp(advertised) if advertised.startswith("tcp://") else None
    if parts is not None:
        try:
            return str(ipaddress.IPv4Address(parts[0]))
        except ValueError:
            pass
    return "0.0.0.0"
