"""A tiny authoritative DNS server over UDP for tests: A and AAAA records for a few
names, NXDOMAIN for the rest, every query counted. Just enough of RFC 1035 for the
system resolver (glibc's getaddrinfo) to ask it and believe the answer."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections import Counter

A, AAAA, IN = 1, 28, 1


class DnsStub:
    """Answers from `records`: name -> addresses (IPv4 for A, IPv6 for AAAA), or None
    for a name never answered (a server that hangs), which the test may change at any
    time; `queries` counts (client ip, name, type) asked. It
    serves on its own thread, so a test blocked on a subprocess still gets answers."""

    def __init__(self, records: dict[str, list[str] | None], host: str, port: int = 53) -> None:
        self.records = records
        self.queries: Counter[tuple[str, str, int]] = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> DnsStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            reply = self.answer(data, addr[0])
            if reply is not None:
                self._sock.sendto(reply, addr)

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
        if name in self.records and self.records[name] is None:
            return None
        if name not in self.records:
            header = struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0)  # NXDOMAIN
            return header + question
        answers = []
        for text in list(self.records[name] or ()):
            ip = ipaddress.ip_address(text)
            if (qtype, qclass, ip.version) in ((A, IN, 4), (AAAA, IN, 6)):
                rdata = ip.packed
                answers.append(struct.pack("!HHHIH", 0xC00C, qtype, IN, 0, len(rdata)) + rdata)
        header = struct.pack("!HHHHHH", ident, 0x8580, 1, len(answers), 0, 0)  # AA, no error
        return header + question + b"".join(answers)
