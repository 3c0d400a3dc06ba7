"""Resolve "module:qualname" references, importing only modules a node was told to load."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from typing import Any

from zmesh.errors import ConfigError, RemoteError


def reference(target: Callable[..., Any] | type | str) -> str:
    """The "module:qualname" that names a module-level function or class."""
    if isinstance(target, str):
        _split(target)
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(
            f"{target!r} cannot be started on another node: only module-level functions and "
            "classes can be named by 'module:qualname'"
        )
    if module == "__main__":
        raise ConfigError(
            f"{qualname} is defined in __main__, which other nodes cannot import: "
            "move it into a module and load that module on the target node"
        )
    return f"{module}:{qualname}"


def _split(ref: str) -> tuple[str, str]:
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname:
        raise ConfigError(f"expected 'module:qualname', got {ref!r}")
    return module, qualname


def resolve(target: Callable[..., Any] | type | str, allowed: Collection[str] | None) -> Any:
    """The object named by `target`; strings are looked up in modules of `allowed` only.

    `allowed` None means "anything already given as an object" (a local start).
    Raises RemoteError naming what was refused and how to allow it.
    """
    if not isinstance(target, str):
        return target
    module_name, qualname = _split(target)
    if allowed is not None and module_name not in allowed:
        raise RemoteError(
            f"module {module_name!r} is not loaded on this node "
            f"(start it with --load {module_name} or Node(load=[{module_name!r}]))"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RemoteError(f"cannot import {module_name!r}: {exc}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RemoteError(f"{module_name!r} has no attribute {qualname!r}") from None
    return obj


def import_all(modules: Collection[str]) -> None:
    """Import each module a node is told to load; ConfigError names one that fails."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot load module {name!r}: {exc}") from None
