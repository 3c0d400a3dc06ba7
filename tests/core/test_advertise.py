"""Bind versus advertise: what peers are told, and the refusals that name the fix."""

from __future__ import annotations

import pytest

from zmesh.core.advertise import advertised_address, check_advertise, is_wildcard
from zmesh.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "wild"),
    [("tcp://0.0.0.0:7000", True), ("tcp://*:7000", True), ("tcp://[::]:7000", True),
     ("tcp://127.0.0.1:7000", False), ("tcp://10.0.0.5:0", False), ("ipc:///tmp/x", False)],
)  # fmt: skip
def test_is_wildcard(address: str, wild: bool) -> None:
    assert is_wildcard(address) is wild


def test_a_specific_bound_address_is_its_own_advertisement() -> None:
    assert advertised_address("tcp://127.0.0.1:7000", None, None) == "tcp://127.0.0.1:7000"


def test_an_explicit_advertisement_wins() -> None:
    got = advertised_address("tcp://0.0.0.0:7000", "tcp://203.0.113.9:31000", None)
    assert got == "tcp://203.0.113.9:31000"


def test_a_wildcard_takes_the_routable_host_and_keeps_the_bound_port() -> None:
    assert advertised_address("tcp://0.0.0.0:7123", None, "10.1.2.3") == "tcp://10.1.2.3:7123"
    assert advertised_address("tcp://[::]:7123", None, "fd00::5") == "tcp://[fd00::5]:7123"


def test_a_wildcard_without_a_routable_host_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--advertise tcp://HOST:7000"):
        advertised_address("tcp://0.0.0.0:7000", None, None)


@pytest.mark.parametrize(
    "bad", ["tcp://0.0.0.0:7000", "tcp://h:0", "tcp://h", "10.0.0.1:7000", "udp://h:1"]
)
def test_undialable_advertisements_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"advertise|tcp address"):
        check_advertise(bad)
