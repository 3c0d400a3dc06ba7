"""`range:HOST_OR_CIDR:PORT[-PORT]`: probe every address of a block on every port
(libcluster's Epmd strategy over an IP range)."""

from __future__ import annotations

from collections.abc import Sequence

from zmesh.core.discovery_spec import RangeSpec, parse_spec


class Range:
    """Join whatever answers at any `tcp://HOST:PORT` of the block and port range.

    Nothing listening at a probed address costs one pending handshake, retried on the
    next poll once it expires; the node's own address is skipped."""

    interval: float | None = None

    def __init__(self, target: str, ports: str | int) -> None:
        self.name = f"range:{target}:{ports}"
        spec = parse_spec(self.name)
        assert isinstance(spec, RangeSpec)
        self.addresses = spec.addresses()

    async def candidates(self) -> Sequence[str]:
        return self.addresses
