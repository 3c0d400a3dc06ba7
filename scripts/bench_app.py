"""Processes the remote benchmarks start on the far node (`zmesh join --load bench_app`)."""

from __future__ import annotations

import zmesh


async def sink(proc: zmesh.Process, reply_to: zmesh.Pid, count: int) -> None:
    """Receive `count` messages, then tell `reply_to` ("done", count)."""
    receive = proc.receive
    for _ in range(count):
        await receive()
    proc.send(reply_to, ("done", count))


async def echo(proc: zmesh.Process) -> None:
    """Send every `(sender, msg)` straight back as `msg`."""
    receive, send = proc.receive, proc.node.send
    while True:
        sender, msg = await receive()
        send(sender, msg)


class Counter(zmesh.GenServer):
    """A minimal server for call benchmarks."""

    async def init(self) -> None:
        self.count = 0

    async def handle_call(self, request: object, caller: zmesh.Caller) -> int:
        self.count += 1
        return self.count


async def idle(proc: zmesh.Process) -> None:
    """Wait for one message."""
    await proc.receive()


async def crowd(proc: zmesh.Process, count: int) -> None:
    """Spawn `count` idle processes on this node, then wait (for inspection benchmarks)."""
    for _ in range(count):
        proc.node.spawn(idle)
    await proc.receive()
