"""The cluster cookie: given, or from ZMESH_COOKIE, or from ~/.zmesh.cookie (made once)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def default_cookie() -> bytes:
    """ZMESH_COOKIE if set; else the contents of ~/.zmesh.cookie, created (mode 0600)
    with a random secret the first time, as Erlang does with ~/.erlang.cookie."""
    env = os.environ.get("ZMESH_COOKIE")
    if env:
        return env.encode()
    path = Path(os.environ.get("ZMESH_COOKIE_FILE", Path.home() / ".zmesh.cookie"))
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(24).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret
