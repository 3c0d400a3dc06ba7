"""Processes a `zmesh join` node runs to call back into the test's node."""

from __future__ import annotations

import zmesh


async def call_and_report(proc: zmesh.Process, server: zmesh.Pid, request: object) -> None:
    """Call `server` with `request` (a long timeout) and exit with whatever it answered."""
    await proc.node.call(server, request, timeout=60)
