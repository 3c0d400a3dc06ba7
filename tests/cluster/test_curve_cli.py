"""CURVE from the terminal: `zmesh keygen`, `zmesh join --curve-secret --allow` as OS
processes, the query commands with the same flags, and revocation on SIGHUP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from joined import Joined, start_join

COOKIE = "curve-cli-cookie"
ENV = dict(os.environ, ZMESH_COOKIE=COOKIE, COLUMNS="200")


def zmesh_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmesh", *args],
        capture_output=True, text=True, timeout=30, env=ENV,
    )  # fmt: skip


def test_keygen_writes_the_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = zmesh_cli("keygen", str(tmp_path), "--name", "n1")
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((tmp_path / "n1.key_secret").stat().st_mode) == 0o600
    assert "name = n1" in (tmp_path / "n1.key").read_text()
    again = zmesh_cli("keygen", str(tmp_path), "--name", "n1")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def names(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["name"] for line in out.stdout.splitlines()]


def test_an_encrypted_cluster_from_the_terminal(tmp_path: Path) -> None:
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    for name in ("a", "b", "ops"):
        assert zmesh_cli("keygen", str(keys), "--name", name).returncode == 0
    allow.mkdir()
    for name in ("a", "b", "ops"):
        shutil.copy(keys / f"{name}.key", allow)

    def flags(name: str) -> list[str]:
        return ["--curve-secret", str(keys / f"{name}.key_secret"), "--allow", str(allow)]

    nodes: list[Joined] = []
    try:
        a = start_join("a", COOKIE, *flags("a"))
        nodes.append(a)
        b = start_join("b", COOKIE, "--seed", f"a@{a.address}", *flags("b"))
        nodes.append(b)
        seed = ["--seed", f"a@{a.address}"]
        deadline = time.monotonic() + 15
        while True:
            got = names(zmesh_cli("nodes", "--json", *seed, *flags("ops")))
            if got == ["a", "b"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert got == ["a", "b"]
        # Without the keys the cluster cannot be asked at all.
        plain = zmesh_cli("nodes", "--seed", a.address)
        assert plain.returncode == 2 and "security" in plain.stderr, plain.stderr
        half = zmesh_cli("nodes", *seed, "--curve-secret", str(keys / "ops.key_secret"))
        assert half.returncode == 2 and "go together" in half.stderr
        # Revoke b: take its key off the list and tell a by SIGHUP.
        (allow / "b.key").unlink()
        a.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            got = names(zmesh_cli("nodes", "--json", *seed, *flags("ops")))
            if got == ["a"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert got == ["a"]
        assert a.proc.poll() is None and b.proc.poll() is None  # revoked, not crashed
    finally:
        codes = [n.stop() for n in nodes]
    assert codes == [0] * len(nodes)
