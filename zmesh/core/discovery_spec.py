"""The `--discover` grammar, parsed without I/O.

    static:ADDR[,ADDR...]            addresses to join (`--seed ADDR` is `static:ADDR`)
    range:HOST_OR_CIDR:PORT[-PORT]   every address of a host or CIDR block, every port
    file:PATH                        a hosts file, one address per line, re-read on change
    gossip[:GROUP:PORT]              authenticated UDP multicast announcements
    dns:NAME:PORT                    the A/AAAA records of NAME, polled

An address is `tcp://HOST:PORT`, `ipc://PATH`, `NAME@` either of those, or a bare
`HOST:PORT` (read as tcp). Every bad spec raises `ConfigError` naming it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from zmesh.errors import ConfigError

#: More probes than this from one `range:` spec is almost surely a typo (a /16).
MAX_RANGE_PROBES = 4096

GRAMMAR = (
    "static:ADDR[,ADDR...], range:HOST_OR_CIDR:PORT[-PORT], file:PATH, gossip[:GROUP:PORT]"
    " or dns:NAME:PORT"
)
#: gossip's default multicast group and UDP port (organisation-local scope, RFC 2365).
GOSSIP_GROUP = "239.255.77.77"
GOSSIP_PORT = 45892


@dataclass(frozen=True, slots=True)
class StaticSpec:
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RangeSpec:
    hosts: tuple[str, ...]  # each already formatted for a tcp:// URL ([v6] bracketed)
    ports: tuple[int, ...]

    def addresses(self) -> list[str]:
        """Every `tcp://HOST:PORT` the range probes, hosts outermost."""
        return [f"tcp://{h}:{p}" for h in self.hosts for p in self.ports]


@dataclass(frozen=True, slots=True)
class FileSpec:
    path: str


@dataclass(frozen=True, slots=True)
class GossipSpec:
    group: str = GOSSIP_GROUP
    port: int = GOSSIP_PORT


@dataclass(frozen=True, slots=True)
class DnsSpec:
    name: str
    port: int


Spec = StaticSpec | RangeSpec | FileSpec | GossipSpec | DnsSpec


def parse_spec(text: str) -> Spec:
    """Parse one `--discover` value."""
    kind, sep, rest = text.partition(":")
    if text == "gossip":
        return GossipSpec()
    if not sep or not rest:
        raise ConfigError(f"bad discovery spec {text!r}: expected {GRAMMAR}")
    if kind == "static":
        parts = [p.strip() for p in rest.split(",")]
        if not all(parts):
            raise ConfigError(f"bad discovery spec {text!r}: an empty address in the list")
        try:
            return StaticSpec(tuple(normalise_address(p) for p in parts))
        except ConfigError as exc:
            raise ConfigError(f"bad discovery spec {text!r}: {exc}") from None
    if kind == "range":
        return _parse_range(text, rest)
    if kind == "file":
        return FileSpec(rest)
    if kind == "gossip":
        group, _, port = rest.rpartition(":")
        try:
            ip = ipaddress.IPv4Address(group)
        except ValueError:
            ip = None
        if ip is None or not ip.is_multicast or "-" in port:
            raise ConfigError(
                f"bad gossip spec {text!r}: expected gossip:GROUP:PORT with GROUP an IPv4 "
                "multicast address"
            )
        return GossipSpec(group, _parse_ports(text, port)[0])
    if kind == "dns":
        name, _, port = rest.rpartition(":")
        if not name or "-" in port:
            raise ConfigError(f"bad dns spec {text!r}: expected dns:NAME:PORT")
        return DnsSpec(name, _parse_ports(text, port)[0])
    raise ConfigError(f"unknown discovery strategy {kind!r} in {text!r}: expected {GRAMMAR}")


def normalise_address(text: str) -> str:
    """`HOST:PORT` -> `tcp://HOST:PORT`; URLs (optionally `NAME@`-prefixed) unchanged."""
    text = text.strip()
    if "://" in text:
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad address {text!r}: expected tcp://HOST:PORT or HOST:PORT")
    return f"tcp://{text}"


def _parse_range(text: str, rest: str) -> RangeSpec:
    target, sep, ports_text = rest.rpartition(":")
    if not sep or not target:
        raise ConfigError(f"bad range spec {text!r}: expected range:HOST_OR_CIDR:PORT[-PORT]")
    ports = _parse_ports(text, ports_text)
    hosts = _parse_hosts(text, target.strip("[]"))
    if len(hosts) * len(ports) > MAX_RANGE_PROBES:
        raise ConfigError(
            f"range spec {text!r} probes {len(hosts) * len(ports)} addresses; "
            f"at most {MAX_RANGE_PROBES}: use a smaller block or port range"
        )
    return RangeSpec(hosts, ports)


def _parse_ports(text: str, ports_text: str) -> tuple[int, ...]:
    low_text, dash, high_text = ports_text.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if dash else low
    except ValueError:
        raise ConfigError(
            f"bad port range {ports_text!r} in {text!r}: expected PORT or PORT-PORT"
        ) from None
    if not 0 < low <= high < 65536:
        raise ConfigError(
            f"bad port range {ports_text!r} in {text!r}: need 0 < low <= high < 65536"
        )
    return tuple(range(low, high + 1))


def _parse_hosts(text: str, target: str) -> tuple[str, ...]:
    if "/" not in target:
        try:
            ip = ipaddress.ip_address(target)
        except ValueError:
            if not target or any(c.isspace() for c in target):
                raise ConfigError(f"bad host {target!r} in {text!r}") from None
            return (target,)  # a host name, resolved when dialled
        return (_url_host(ip),)
    try:
        net = ipaddress.ip_network(target, strict=False)
    except ValueError as exc:
        raise ConfigError(f"bad CIDR block {target!r} in {text!r}: {exc}") from None
    if net.num_addresses > MAX_RANGE_PROBES + 2:
        raise ConfigError(
            f"CIDR block {target!r} in {text!r} is too large (over {MAX_RANGE_PROBES})"
        )
    # A /32 (or /31, /128) has no "hosts" apart from its addresses: take them all.
    members = list(net.hosts()) if net.num_addresses > 2 else list(net)
    return tuple(_url_host(ip) for ip in members)


def _url_host(ip: object) -> str:
    text = str(ip)
    return f"[{text}]" if ":" in text else text


def parse_hosts_file(text: str) -> list[str]:
    """Addresses in a hosts file: one per line; blank lines and `#` comments skipped.
    A line that is not an address raises ConfigError naming it."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found.append(normalise_address(line))
    return found
