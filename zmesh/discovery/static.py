"""`static:ADDR[,ADDR...]`: a fixed list of addresses (`--seed` is its shorthand)."""

from __future__ import annotations

from collections.abc import Sequence

from zmesh.core.discovery_spec import normalise_address


class Static:
    """Join these addresses, retrying any that is not connected, forever."""

    interval: float | None = None

    def __init__(self, *addresses: str) -> None:
        self.addresses = [normalise_address(a) for a in addresses]
        self.name = "static:" + ",".join(self.addresses)

    async def candidates(self) -> Sequence[str]:
        return self.addresses
