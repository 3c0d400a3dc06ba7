"""Loaded by `zmesh join --load zmesh_probe_app` in tests: reports on the process."""

from __future__ import annotations

import sys

import zmesh

#: Libraries of the command-line parser, which a running node should not hold.
PARSER_LIBRARIES = ("typer", "click", "rich", "pydantic", "pydantic_core")


async def parser_modules(proc: zmesh.Process, reply_to: zmesh.Pid) -> None:
    """Send `reply_to` the parser libraries imported in this OS process."""
    loaded = sorted(name for name in PARSER_LIBRARIES if name in sys.modules)
    proc.node.send(reply_to, ("parser_modules", loaded))
