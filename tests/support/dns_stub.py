"""A tiny authoritative DNS server over UDP for tests: A and AAAA records for a few
names, NXDOMAIN for the rest, every query counted. Just enough of RFC 1035 for the
system resolver (glibc's getaddrinfo) to ask it and believe the answer."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections import Counter
from typing import Any, cast

A, AAAA, IN = 1, 28, 1


class DnsStub(asyncio.DatagramProtocol):
    """Answers from `records`: name -> addresses (IPv4 for A, IPv6 for AAAA), which the
    test may change at any time; `queries` counts (client ip, name, type) asked."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.queries: Counter[tuple[str, str, int]] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.answer(data, addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def answer(self, query: bytes, client: str) -> bytes | None:
        """The response to one query packet, or None for junk (dropped)."""
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        labels, at = [], 12
        while at < len(query) and query[at] != 0:
            size = query[at]
            labels.append(query[at + 1 : at + 1 + size].decode("ascii", "replace"))
            at += 1 + size
        at += 1
        if at + 4 > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[at : at + 4])
        question = query[12 : at + 4]
        name = ".".join(labels).lower()
        self.queries[(client, name, qtype)] += 1
        if name not in self.records:
            header = struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0)  # NXDOMAIN
            return header + question
        answers = []
        for text in self.records[name]:
            ip = ipaddress.ip_address(text)
            if (qtype, qclass, ip.version) in ((A, IN, 4), (AAAA, IN, 6)):
                rdata = ip.packed
                answers.append(struct.pack("!HHHIH", 0xC00C, qtype, IN, 0, len(rdata)) + rdata)
        header = struct.pack("!HHHHHH", ident, 0x8580, 1, len(answers), 0, 0)  # AA, no error
        return header + question + b"".join(answers)


async def serve(records: dict[str, list[str]], host: str, port: int = 53) -> DnsStub:
    """A stub listening on `host:port` (UDP) until its transport is closed."""
    loop = asyncio.get_running_loop()
    _, stub = await loop.create_datagram_endpoint(lambda: DnsStub(records), local_addr=(host, port))
    return stub
