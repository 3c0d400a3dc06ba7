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


class Counter(zmesh.GenServer):
    """The seed's DistributedCounter, written as the API contract shows."""

    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request: object, caller: object) -> object:
        if request == "increment":
            self.count += 1
        elif request == "where":
            return self.node.name
        elif request == "crash":
            raise RuntimeError("asked to crash")
        elif request == "hold":
            return zmesh.NOREPLY
        return self.count

    async def handle_cast(self, request: object) -> None:
        if request == "reset":
            self.count = 0
