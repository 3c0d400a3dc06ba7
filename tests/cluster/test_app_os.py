"""`zmesh join --app`: the application starts with the node, stops before it leaves,
and its top process's crash ends the node with exit status 1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from joined import start_join

from zmesh import Node

COOKIE = "app-os-cookie"


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_app_class_starts_a_tree_and_on_sigterm_stops_it_first_then_exits_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "mark"
    monkeypatch.setenv("ZMESH_TEST_APP_MARK", str(mark))
    node = start_join("app1", COOKIE, "--app", "zmesh_test_app:App")
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(node.address)
            await wait_for(lambda: observer.whereis("app_counter") is not None, 10)
            assert await observer.call("app_counter", "increment") == 1
            node.signal(signal.SIGTERM)
            assert node.proc.wait(15) == 0
        assert mark.read_text() == "stop counter_alive=True\n"
    finally:
        node.stop()


@pytest.mark.timeout(60)
async def test_the_top_supervisor_past_its_intensity_ends_join_with_exit_one() -> None:
    node = start_join("app2", COOKIE, "--app", "zmesh_test_app:app_start")
    try:
        async with Node("watch", cookie=COOKIE, hidden=True) as observer:
            await observer.connect(node.address)
            await wait_for(lambda: observer.whereis("app_crashy") is not None, 10)
            first = observer.whereis("app_crashy")
            observer.send("app_crashy", "crash")
            await wait_for(lambda: observer.whereis("app_crashy") not in (None, first), 10)
            observer.send("app_crashy", "crash")  # the second restart in 10 s: too many
            assert node.proc.wait(15) == 1
        assert "its application ended (shutdown)" in node.output()
    finally:
        node.stop()


@pytest.mark.timeout(30)
def test_join_refuses_an_app_it_cannot_load_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmesh", "join", "x", "--app", "zmesh_test_app:NOT_CALLABLE"],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, ZMESH_COOKIE="c"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "zmesh_test_app:NOT_CALLABLE" in result.stderr
