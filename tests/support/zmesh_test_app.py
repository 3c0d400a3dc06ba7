"""Functions that test nodes load with `--load zmesh_test_app` / `Node(load=[...])`."""

from __future__ import annotations

import zmesh


async def echo(proc: zmesh.Process) -> None:
    """Reply `("echo", msg)` to every `(sender, msg)`."""
    while True:
        sender, message = await proc.receive()
        proc.send(sender, ("echo", message))


async def sink(proc: zmesh.Process, reply_to: zmesh.Pid, count: int) -> None:
    """Receive `count` messages, then tell `reply_to` how many arrived in order."""
    in_order = 0
    for i in range(count):
        if await proc.receive() == i:
            in_order += 1
    proc.send(reply_to, ("received", in_order))


async def idle(proc: zmesh.Process) -> None:
    await proc.receive()


NOT_CALLABLE = 42
