"""Discovery strategies (libcluster's), one per module, behind the `Strategy` protocol.

`from_spec("range:10.0.0.0/28:7000")` builds a strategy from its `--discover`
spelling (grammar in `zmesh.core.discovery_spec`); `Node(discovery=[...])` takes
strategies or spellings.
"""

from __future__ import annotations

from zmesh.core.discovery_spec import (
    DnsSpec,
    FileSpec,
    GossipSpec,
    RangeSpec,
    StaticSpec,
    parse_spec,
)
from zmesh.discovery.dns import Dns
from zmesh.discovery.gossip import Gossip
from zmesh.discovery.hosts_file import HostsFile
from zmesh.discovery.range import Range
from zmesh.discovery.static import Static
from zmesh.discovery.strategy import Strategy

__all__ = ["Dns", "Gossip", "HostsFile", "Range", "Static", "Strategy", "from_spec"]


def from_spec(text: str) -> Strategy:
    """The strategy a `--discover` value names; ConfigError if it is malformed."""
    spec = parse_spec(text)
    if isinstance(spec, StaticSpec):
        return Static(*spec.addresses)
    if isinstance(spec, RangeSpec):
        target, _, ports = text.removeprefix("range:").rpartition(":")
        return Range(target, ports)
    if isinstance(spec, GossipSpec):
        return Gossip(spec.group, spec.port)
    if isinstance(spec, DnsSpec):
        return Dns(spec.name, spec.port)
    assert isinstance(spec, FileSpec)
    return HostsFile(spec.path)
