"""The inspection commands against a real `zmesh join` node."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from joined import start_join

import zmesh

COOKIE = "cli-cookie"


def zmesh_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmesh", *args],
        capture_output=True, text=True, timeout=30,
        env=dict(os.environ, ZMESH_COOKIE=COOKIE),
    )  # fmt: skip


@pytest.mark.timeout(90)
async def test_nodes_ps_whereis_call_and_ring() -> None:
    joined = start_join("served", COOKIE)
    try:
        async with zmesh.Node("helper", cookie=COOKIE) as node:
            await node.connect(joined.address)
            await node.start("zmesh_test_app:Counter", 41, name="answer", on="served")
            seed = ("--seed", joined.address)
            out = await asyncio.to_thread(zmesh_cli, "nodes", *seed)
            assert out.returncode == 0 and out.stdout.split() == ["helper", "served"]
            out = await asyncio.to_thread(zmesh_cli, "whereis", "answer", *seed)
            assert out.returncode == 0 and out.stdout.startswith("<served.")
            out = await asyncio.to_thread(zmesh_cli, "call", "answer", '"increment"', *seed)
            assert out.returncode == 0 and out.stdout.strip() == "42"
            out = await asyncio.to_thread(zmesh_cli, "ps", *seed)
            assert out.returncode == 0 and '"node": "served"' in out.stdout
            out = await asyncio.to_thread(zmesh_cli, "ring", *seed, "--key", "user:1")
            assert out.returncode == 0 and "HashRing(" in out.stdout and "user:1 -> " in out.stdout
            out = await asyncio.to_thread(zmesh_cli, "whereis", "nobody", *seed)
            assert out.returncode == 1 and "nobody" in out.stderr
    finally:
        assert joined.stop() == 0


def test_a_wrong_cookie_is_reported_clearly() -> None:
    joined = start_join("guarded", COOKIE)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "zmesh", "nodes", "--seed", joined.address, "--cookie", "bad"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 2 and "cookie" in out.stderr
    finally:
        joined.stop()
