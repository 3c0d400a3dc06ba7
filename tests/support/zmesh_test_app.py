"""Functions that test nodes load with `--load zmesh_test_app` / `Node(load=[...])`."""

from __future__ import annotations

import asyncio

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


async def crowd(proc: zmesh.Process, count: int) -> None:
    """Spawn `count` idle processes on this node, then wait: a node with many processes."""
    for _ in range(count):
        proc.node.spawn(idle)
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


class DistributedCounter(zmesh.GenServer):
    """The seed's example as the README writes it: one counter in the cluster."""

    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request: object, caller: zmesh.Caller) -> object:
        if request == "increment":
            self.count += 1
        elif request == "where":
            return self.node.name
        return self.count

    async def handoff(self) -> int:
        return self.count

    async def restore(self, state: int) -> None:
        self.count = state


class Tracked(zmesh.GenServer):
    """A service that tells `report_to` of its init and terminate, keeps the casts
    ("append", x) it got in order, and hands both over when it moves."""

    async def init(self, report_to: zmesh.Pid, start: int = 0) -> None:
        self.report_to = report_to
        self.count = start
        self.items: list[object] = []
        self.restored = False
        self.node.send(report_to, ("init", self.node.name, self.pid))

    async def handle_call(self, request: object, caller: zmesh.Caller) -> object:
        if request == "increment":
            self.count += 1
        elif request == "where":
            return self.node.name
        elif request == "items":
            return self.items
        elif request == "restored":
            return self.restored
        elif request == "exit_normally":
            self.stop("normal")
        elif request == "crash":
            raise RuntimeError("asked to crash")
        return self.count

    async def handle_cast(self, request: object) -> None:
        if isinstance(request, tuple) and request[:1] == ("append",):
            self.items.append(request[1])

    async def handle_info(self, message: object) -> None:
        if isinstance(message, tuple) and message[:1] == ("append",):
            self.items.append(message[1])

    async def handoff(self) -> object:
        return {"count": self.count, "items": self.items}

    async def restore(self, state: dict[str, object]) -> None:
        self.count = state["count"]  # type: ignore[assignment]
        self.items = list(state["items"])  # type: ignore[call-overload]
        self.restored = True

    async def terminate(self, reason: object) -> None:
        self.node.send(self.report_to, ("terminate", self.node.name, self.pid, reason))


async def pinger(proc: zmesh.Process) -> None:
    """A function service: answers `(sender, x)` with `("pong", node name, x)`."""
    while True:
        sender, message = await proc.receive()
        proc.send(sender, ("pong", proc.node.name, message))


class FailsInit(zmesh.GenServer):
    async def init(self) -> None:
        raise ValueError("init refuses")


class _Reporting(DistributedCounter):
    """A counter that reports a step of its move to `report_to`, which takes `delay` s."""

    async def init(
        self, start: int = 0, report_to: zmesh.Pid | None = None, delay: float = 0.5
    ) -> None:
        self.count = start
        self.report_to = report_to
        self.delay = delay


class SlowHandoff(_Reporting):
    """A counter whose handoff tells `report_to` it began, then takes `delay` seconds."""

    async def handoff(self) -> int:
        if self.report_to is not None:
            self.node.send(self.report_to, ("handing_off", self.node.name))
        await asyncio.sleep(self.delay)
        return self.count


class BadHandoff(DistributedCounter):
    """A counter whose handoff fails: a move must start the next instance from init."""

    async def handoff(self) -> int:
        raise RuntimeError("no state today")

    async def restore(self, state: int) -> None:
        if state is None:
            raise AssertionError("restore(None): a failed handoff was passed on as a state")
        self.count = state


class SlowTerminate(DistributedCounter):
    """A counter whose terminate takes `delay` seconds."""

    async def init(self, start: int = 0, delay: float = 3.0) -> None:
        self.count = start
        self.delay = delay

    async def terminate(self, reason: object) -> None:
        await asyncio.sleep(self.delay)


class SlowRestore(_Reporting):
    """A counter whose restore tells `report_to` it began, then takes `delay` seconds."""

    async def restore(self, state: int) -> None:
        if self.report_to is not None:
            self.node.send(self.report_to, ("restoring", self.node.name))
        await asyncio.sleep(self.delay)
        self.count = state


async def crashy(proc: zmesh.Process) -> None:
    """Crash when told "crash"; ignore anything else."""
    while True:
        if await proc.receive() == "crash":
            raise RuntimeError("asked to crash")


async def app_start(node: zmesh.Node) -> zmesh.Pid:
    """`--app zmesh_test_app:app_start`: a supervisor over a registered Counter and a
    registered crashy worker; a second crash within 10 s ends the supervisor."""
    return await node.start_supervisor(
        [zmesh.child(Counter, 0, name="app_counter"), zmesh.child(crashy, name="app_crashy")],
        max_restarts=1,
        max_seconds=10.0,
    )


class App(zmesh.Application):
    """The class form; `stop` appends "stop" to $ZMESH_TEST_APP_MARK, and the Counter's
    pid is still registered then (the tree stops after `stop`)."""

    async def start(self, node: zmesh.Node) -> zmesh.Pid | None:
        return await app_start(node)

    async def stop(self, node: zmesh.Node) -> None:
        import os

        alive = node.whereis("app_counter") is not None
        with open(os.environ["ZMESH_TEST_APP_MARK"], "a") as f:
            f.write(f"stop counter_alive={alive}\n")


async def map_app(node: zmesh.Node) -> zmesh.Pid:
    """`--app zmesh_test_app:map_app`: opens the replicated map "shared", writes
    ("up", its name) = its creation, and answers every ("ping", x) key it sees with
    ("pong", its name, x) = the ping's value: a test reads this node's replica through
    its own. The top process does the echoing."""
    shared = await node.replicated_map("shared")
    shared.put(("up", node.name), node.creation)

    async def echo(proc: zmesh.Process) -> None:
        for key, value in shared.items():  # pings written before this node (re)joined
            if type(key) is tuple and key[0] == "ping":
                shared.put(("pong", node.name, key[1]), value)
        async for change in shared.changes():
            key = change.key
            if type(key) is tuple and key[0] == "ping" and change.new is not None:
                shared.put(("pong", node.name, key[1]), change.new)

    return node.spawn(echo)


async def cart_example(node: zmesh.Node) -> list[str]:
    kv = await node.kv_open("carts", n=3, partitions=64)
    await kv.put("cart:ada", ["milk"], w=2)
    seen = await kv.fetch("cart:ada", r=2)  # every sibling, and the context they had
    await kv.put("cart:ada", ["milk", "eggs"], w=2, context=seen.context)
    cart = await kv.get("cart:ada", r=2)
    if isinstance(cart, zmesh.Conflict):  # two writers raced: merge, write back
        cart = sorted(set().union(*cart.values))
        await kv.put("cart:ada", cart, context=(await kv.fetch("cart:ada")).context)
    return cart  # type: ignore[no-any-return]


async def data_app(node: zmesh.Node) -> zmesh.Pid:
    """`--app zmesh_test_app:data_app` (scripts/bench_data.py --os): `map_app`, and a
    member of the partitioned store "bench" (n=3)."""
    await node.kv_open("bench", n=3)
    return await map_app(node)
