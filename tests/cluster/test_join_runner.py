"""`zmesh join` parses its options, then runs the node in the same process (same pid)
without the parser's libraries, and without the cookie on its command line."""

from __future__ import annotations

import pytest
from joined import start_join

from zmesh import Node

COOKIE = "runner-cookie-a8f3"


@pytest.mark.timeout(60)
async def test_a_running_join_holds_none_of_the_parsers_libraries() -> None:
    joined = start_join("lean", COOKIE, "--load", "zmesh_probe_app")
    try:
        async with Node("asker", cookie=COOKIE) as asker, asker.process() as me:
            await asker.connect(joined.address)
            await asker.spawn_remote("lean", "zmesh_probe_app:parser_modules", me.pid)
            assert await me.receive(timeout=10) == ("parser_modules", [])
    finally:
        assert joined.stop() == 0


@pytest.mark.timeout(60)
async def test_the_node_runs_in_the_started_process_without_the_cookie_on_its_command_line() -> (
    None
):
    joined = start_join("quiet", "not-this-one", "--cookie", COOKIE)
    try:
        with open(f"/proc/{joined.proc.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert any(b"zmesh.cli.runner" in arg for arg in argv)  # the started pid runs the node
        assert not any(COOKIE.encode() in arg for arg in argv)
        async with Node("asker", cookie=COOKIE) as asker:
            assert await asker.connect(joined.address) == "quiet"  # --cookie won
    finally:
        assert joined.stop() == 0


@pytest.mark.timeout(60)
async def test_a_node_loads_openssl_only_when_something_uses_tls() -> None:
    """asyncio imports `ssl` eagerly; the runner defers it (about 4 MiB resident), and
    TLS through asyncio works once something imports it."""
    joined = start_join("plain", COOKIE, "--load", "zmesh_probe_app", "--loop", "asyncio")
    try:
        async with Node("asker", cookie=COOKIE) as asker, asker.process() as me:
            await asker.connect(joined.address)
            await asker.spawn_remote("plain", "zmesh_probe_app:tls_state", me.pid)
            assert await me.receive(timeout=10) == ("tls_state", False, False)
            await asker.spawn_remote("plain", "zmesh_probe_app:tls_echo", me.pid)
            assert await me.receive(timeout=10) == ("tls_echo", b"over tls\n", "TLSv1.3")
            await asker.spawn_remote("plain", "zmesh_probe_app:tls_state", me.pid)
            assert await me.receive(timeout=10) == ("tls_state", True, True)
    finally:
        assert joined.stop() == 0
