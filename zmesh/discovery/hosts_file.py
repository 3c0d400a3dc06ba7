"""`file:PATH`: a hosts file, one address per line, re-read when it changes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from zmesh.core.discovery_spec import parse_hosts_file


class HostsFile:
    """Join the addresses listed in `path` (blank lines and `#` comments skipped).

    The file is re-read when its modification time or size changes, so an edit is seen
    within one poll; a missing or malformed file raises from `candidates()` (logged
    once, then polled again) and the node keeps the peers it has."""

    interval: float | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.name = f"file:{self.path}"
        self._stamp: tuple[int, int] | None = None
        self._addresses: list[str] = []

    async def candidates(self) -> Sequence[str]:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                self._addresses = parse_hosts_file(f.read())
            self._stamp = stamp
        return self._addresses
