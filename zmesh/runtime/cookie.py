"""The cluster cookie: given, or from ZMESH_COOKIE, or from ~/.zmesh.cookie (made once)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from zmesh.errors import ConfigError


def default_cookie() -> bytes:
    """ZMESH_COOKIE if set; else the contents of ~/.zmesh.cookie (or $ZMESH_COOKIE_FILE),
    created (mode 0600) with a random secret the first time, as Erlang does with
    ~/.erlang.cookie. Raises ConfigError, as Erlang refuses to start, if the file is
    readable by group or others or is empty."""
    env = os.environ.get("ZMESH_COOKIE")
    if env:
        return env.encode()
    path = Path(os.environ.get("ZMESH_COOKIE_FILE", Path.home() / ".zmesh.cookie"))
    try:
        return read_cookie_file(path)
    except FileNotFoundError:
        pass
    # `secrets.token_urlsafe(24)`, without `secrets`, whose `hmac` maps OpenSSL (~4 MiB).
    secret = base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"=")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node created it first
        return read_cookie_file(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def read_cookie_file(path: Path) -> bytes:
    """The cookie in `path`; ConfigError if others may read it or it is empty."""
    with path.open("rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read().strip()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the cookie file {path} is accessible by group or others"
            f" (mode {stat.S_IMODE(mode):o}): run chmod 600 {path}"
        )
    if not data:
        raise ConfigError(f"the cookie file {path} is empty: put a secret in it, or delete it")
    return data
