"""`Node(advertise=...)`: peers dial what a node advertises, not what it bound."""

from __future__ import annotations

import pytest
from ports import free_block

import zmesh
from zmesh import Node
from zmesh.runtime.advertise import routable_ip
from zmesh.testing import TEST_CONFIG, wait_until

from ..conftest import COOKIE


async def test_a_third_node_reaches_a_wildcard_bound_node_through_its_advertisement() -> None:
    """a binds every interface and advertises 127.0.0.2 (another loopback address):
    c learns of a from b and dials exactly what a advertised."""
    port = free_block(1)
    async with (
        Node("a", listen=f"tcp://0.0.0.0:{port}", advertise=f"tcp://127.0.0.2:{port}",
             cookie=COOKIE, config=TEST_CONFIG) as a,
        Node("b", cookie=COOKIE, config=TEST_CONFIG) as b,
        Node("c", cookie=COOKIE, config=TEST_CONFIG) as c,
    ):  # fmt: skip
        assert a.address == f"tcp://0.0.0.0:{port}"
        assert a.advertised == f"tcp://127.0.0.2:{port}"
        await b.connect(f"tcp://127.0.0.1:{port}")
        await c.connect(b.address)  # type: ignore[arg-type]
        await wait_until(lambda: c.nodes() == ["a", "b"], 5)
        assert c._dist is not None
        assert c._dist.sessions["a"].address == f"tcp://127.0.0.2:{port}"
        assert (await c.node_info("a"))["address"] == f"tcp://127.0.0.2:{port}"


async def test_zmesh_advertise_environment_variable_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZMESH_ADVERTISE", "tcp://127.0.0.3:7999")
    async with Node("a", cookie=COOKIE, config=TEST_CONFIG) as a:
        assert a.advertised == "tcp://127.0.0.3:7999"
        assert a.address is not None and a.address.startswith("tcp://127.0.0.1:")


async def test_a_wildcard_bind_advertises_the_routable_address_or_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ip = routable_ip()
    if ip is not None:
        async with Node("a", listen="tcp://0.0.0.0:0", cookie=COOKIE) as a:
            port = a.address.rpartition(":")[2]  # type: ignore[union-attr]
            assert a.advertised == f"tcp://{ip}:{port}"
    monkeypatch.setattr("zmesh.runtime.dist.routable_ip", lambda: None)
    with pytest.raises(zmesh.ConfigError, match="--advertise"):
        async with Node("b", listen="tcp://0.0.0.0:0", cookie=COOKIE):
            pass


def test_an_undialable_advertisement_is_refused() -> None:
    with pytest.raises(zmesh.ConfigError, match=r"0\.0\.0\.0"):
        Node("a", cookie=COOKIE, advertise="tcp://0.0.0.0:7000")
