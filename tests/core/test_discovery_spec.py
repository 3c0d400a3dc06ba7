"""The `--discover` grammar: every spelling parsed, every bad one refused by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.core.discovery_spec import (
    GOSSIP_GROUP,
    GOSSIP_PORT,
    DnsSpec,
    FileSpec,
    GossipSpec,
    RangeSpec,
    StaticSpec,
    normalise_address,
    parse_hosts_file,
    parse_spec,
)
from zmesh.errors import ConfigError


def test_static_lists_addresses_and_reads_bare_host_port_as_tcp() -> None:
    spec = parse_spec("static:tcp://10.0.0.1:7000,10.0.0.2:7001,b@tcp://h:1")
    assert spec == StaticSpec(("tcp://10.0.0.1:7000", "tcp://10.0.0.2:7001", "b@tcp://h:1"))


def test_range_over_one_host_and_a_port_range() -> None:
    spec = parse_spec("range:127.0.0.1:7000-7002")
    assert isinstance(spec, RangeSpec)
    assert spec.addresses() == [f"tcp://127.0.0.1:{p}" for p in (7000, 7001, 7002)]


def test_range_over_a_cidr_block_skips_network_and_broadcast() -> None:
    spec = parse_spec("range:10.0.0.0/28:7000")
    assert isinstance(spec, RangeSpec)
    assert spec.addresses() == [f"tcp://10.0.0.{i}:7000" for i in range(1, 15)]


def test_range_over_a_slash_32_and_ipv6_and_a_host_name() -> None:
    assert parse_spec("range:10.1.2.3/32:1").addresses() == ["tcp://10.1.2.3:1"]  # type: ignore[union-attr]
    assert parse_spec("range:::1:7000").addresses() == ["tcp://[::1]:7000"]  # type: ignore[union-attr]
    assert parse_spec("range:db.local:5").addresses() == ["tcp://db.local:5"]  # type: ignore[union-attr]


def test_gossip_defaults_and_explicit_group_and_port() -> None:
    assert parse_spec("gossip") == GossipSpec(GOSSIP_GROUP, GOSSIP_PORT)
    assert parse_spec("gossip:239.1.2.3:5000") == GossipSpec("239.1.2.3", 5000)


def test_dns_spec() -> None:
    assert parse_spec("dns:zmesh.default.svc:7000") == DnsSpec("zmesh.default.svc", 7000)


def test_file_spec_keeps_the_path() -> None:
    assert parse_spec("file:/etc/zmesh/hosts") == FileSpec("/etc/zmesh/hosts")


@pytest.mark.parametrize(
    "bad",
    [
        "", "static", "static:", "static:a:1,,b:2", "static:nohost", "dns", "bogus:x",
        "range:127.0.0.1", "range:127.0.0.1:x", "range:127.0.0.1:7002-7000",
        "range:127.0.0.1:0", "range:127.0.0.1:70000", "range:10.0.0.0/33:1",
        "range:10.0.0.0/8:7000", "range:10.0.0.0/24:1-100", "file:",
        "gossip:", "gossip:10.0.0.1:5000", "gossip:239.1.1.1:5-6", "gossip:239.1.1.1:x",
        "dns:", "dns:name", "dns:name:0", "dns::7000", "dns:name:1-2",
    ],
)  # fmt: skip
def test_bad_specs_are_refused_with_config_error_naming_them(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(bad)
    assert repr(bad) in str(info.value)


def test_hosts_file_skips_blanks_and_comments_and_refuses_junk() -> None:
    text = "# cluster\n\ntcp://10.0.0.1:7000\n  10.0.0.2:7001  # second\n"
    assert parse_hosts_file(text) == ["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7001"]
    with pytest.raises(ConfigError, match="not-an-address"):
        parse_hosts_file("not-an-address\n")


@given(st.integers(1, 65535), st.integers(0, 20))
def test_range_probes_every_port_once_in_order(low: int, width: int) -> None:
    high = min(low + width, 65535)
    spec = parse_spec(f"range:127.0.0.1:{low}-{high}")
    assert isinstance(spec, RangeSpec)
    assert spec.ports == tuple(range(low, high + 1))
    assert len(set(spec.addresses())) == high - low + 1


def test_normalise_address_leaves_urls_alone() -> None:
    assert normalise_address("ipc:///tmp/x") == "ipc:///tmp/x"
    assert normalise_address(" h:1 ") == "tcp://h:1"
