"""The cookie file, as Erlang users expect it: private, non-empty, made once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import zmesh
from zmesh.runtime.cookie import default_cookie


@pytest.fixture
def cookie_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cookie"
    monkeypatch.delenv("ZMESH_COOKIE", raising=False)
    monkeypatch.setenv("ZMESH_COOKIE_FILE", str(path))
    return path


def test_the_cookie_file_is_created_private_once(cookie_file: Path) -> None:
    first = default_cookie()
    assert stat.S_IMODE(cookie_file.stat().st_mode) == 0o600
    assert first and default_cookie() == first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_cookie_file_others_can_read_is_refused_naming_the_fix(
    cookie_file: Path, mode: int
) -> None:
    cookie_file.write_bytes(b"secret")
    cookie_file.chmod(mode)
    with pytest.raises(zmesh.ConfigError, match=f"chmod 600 {cookie_file}"):
        default_cookie()


def test_an_empty_cookie_file_is_refused(cookie_file: Path) -> None:
    cookie_file.write_bytes(b"\n")
    cookie_file.chmod(0o600)
    with pytest.raises(zmesh.ConfigError, match="empty"):
        default_cookie()


async def test_an_empty_cookie_is_refused() -> None:
    with pytest.raises(zmesh.ConfigError, match="empty"):
        async with zmesh.Node("a", cookie=""):
            pass


async def test_a_node_refuses_to_start_with_a_shared_cookie_file(cookie_file: Path) -> None:
    cookie_file.write_bytes(b"secret")
    cookie_file.chmod(0o644)
    with pytest.raises(zmesh.ConfigError, match="chmod 600"):
        async with zmesh.Node("a"):
            pass
