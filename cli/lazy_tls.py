"""OpenSSL in a `zmesh join` node only once something uses TLS (about 4 MiB resident).

asyncio imports `ssl` when it is imported, though only TLS connections use it, and a node
makes none (CURVE is libsodium). The runner's process starts with `ssl` masked
(`sys.modules["ssl"] = None` unless it is already imported, see `runner.BOOT`), so the
asyncio modules that keep it as a global see it as absent. `unmask_ssl` lifts the mask
and puts a finder first on `sys.meta_path`: the first `import ssl` afterwards (an
application's HTTPS client, uvloop) loads the real module and hands it to those asyncio
modules, and re-runs `asyncio.sslproto`, whose module-level names depend on it. TLS
through asyncio then works as in any process.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: The asyncio modules that hold `ssl` as a global (the same in Python 3.10 to 3.13).
HOLDERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")
#: Re-run once `ssl` is there: it defines names only `if ssl is not None`.
RERUN = "asyncio.sslproto"


def unmask_ssl() -> bool:
    """Lift the runner's mask on `ssl` and load it on first import; False (nothing done)
    if `ssl` was not masked."""
    if "ssl" not in sys.modules or sys.modules["ssl"] is not None:
        return False
    del sys.modules["ssl"]
    sys.meta_path.insert(0, _FindSSL())
    return True


class _FindSSL(importlib.abc.MetaPathFinder):
    """Finds `ssl` once, where the path finder does, with a loader that then hands it
    to asyncio; steps aside after that first lookup."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ssl":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _HandToAsyncio(spec.loader)
        return spec


class _HandToAsyncio(importlib.abc.Loader):
    """The path finder's loader for `ssl`, which afterwards fills asyncio's `ssl` globals."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for name in HOLDERS:
            holder = sys.modules.get(name)
            if holder is not None and getattr(holder, "ssl", False) is None:
                setattr(holder, "ssl", module)  # noqa: B010 - a module of the standard library
                if name == RERUN:
                    importlib.reload(holder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)  # get_source, get_filename, ... as the path finder's
