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
        assert b"zmesh.cli.runner" in argv  # the started pid is the running node
        assert not any(COOKIE.encode() in arg for arg in argv)
        async with Node("asker", cookie=COOKIE) as asker:
            assert await asker.connect(joined.address) == "quiet"  # --cookie won
    finally:
        assert joined.stop() == 0
