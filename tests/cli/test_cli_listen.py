"""Where a command's short-lived node listens: an address the nodes it asks can dial."""

from __future__ import annotations

import pytest
from zmesh.cli.common import Access, cli_node, local_ip_towards  # type: ignore[import-not-found,unused-ignore]


@pytest.mark.parametrize(
    "seed",
    ["tcp://127.0.0.1:7000", "b@tcp://127.0.0.1:7000", "ipc:///tmp/x", "tcp://[::1]:7000",
     "tcp://no-such-host.invalid:7000", "tcp://127.0.0.1:notaport"],
)  # fmt: skip
def test_a_loopback_ipc_ipv6_or_unresolvable_seed_keeps_loopback(seed: str) -> None:
    assert local_ip_towards(seed) == "127.0.0.1"


async def test_the_joined_nodes_advertised_address_is_never_the_commands_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`$ZMESH_ADVERTISE` beside a joined node names that node, not the command's."""
    monkeypatch.setenv("ZMESH_ADVERTISE", "tcp://127.0.0.1:7000")
    async with cli_node(Access(cookie="c"), ["tcp://127.0.0.1:7000"]) as node:
        assert node.address is not None and node.address.startswith("tcp://127.0.0.1:")
        assert node.advertised == node.address
