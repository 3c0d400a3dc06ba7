"""Service instances on one node: start one (name first, then `init`), take its state
and stop it for a move, stop it through `terminate`, give it a moved state.

Every function here leaves the instance in a known state when it returns or raises:
started and registered, or dead. None keeps a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmesh.core.registry_state import Stamp
from zmesh.core.service_wire import Restored
from zmesh.errors import CallTimeout, ConfigError, NameTaken, NoProc, ZmeshError
from zmesh.runtime import gen_server
from zmesh.runtime.loader import resolve
from zmesh.terms import KILL, NORMAL, SHUTDOWN, Down, Pid

if TYPE_CHECKING:
    from zmesh.runtime.node import Node
    from zmesh.runtime.process import Process

#: How long a taking-over instance retries a name that the old one is still giving up
#: (the leader may see the old registration's removal a moment after the target does).
CLAIM_WINDOW = 2.0
_KILL_WAIT = 1.0  # after "kill", how long to wait for the Down (it comes at once locally)


@dataclass(eq=False)
class Instance:
    """A service instance running on this node."""

    name: str
    pid: Pid
    stamp: Stamp
    is_server: bool
    expected: bool = True  # its exit is ours (starting, moving, stopping): not a crash


def check_startable(server: Any) -> None:
    """ConfigError unless `server` is a GenServer class or an async function."""
    if gen_server.is_server(server) or inspect.iscoroutinefunction(server):
        return
    raise ConfigError(
        f"a service runs a GenServer subclass or an async function fn(proc, *args), got {server!r}"
    )


def is_server_ref(server: Any) -> bool:
    """Whether `server` names a GenServer class, as far as this node can tell."""
    if isinstance(server, str):
        try:
            server = resolve(server, None)
        except ZmeshError:
            return False
    return gen_server.is_server(server)


async def launch(
    node: Node,
    server: Any,
    stamp: Stamp,
    name: str,
    args: tuple[Any, ...],
    restored: Restored,
    *,
    takeover: bool,
    timeout: float,
    moving: Callable[[str], bool],
    started: Callable[[Instance], None],
) -> Instance:
    """Start an instance of `server(*args)` registered as `name`; return it once `init`
    (and `restore`, with `restored`) is done. `started(instance)` is called as soon as
    its pid exists, so its exit is never missed.

    Raises NameTaken if another process holds the name, ZmeshError if `init` failed or
    took longer than `timeout` (the instance is then killed).
    """
    async with node.process() as me:
        pid = node.spawn(_service_main, server, args, name, me.pid, restored, takeover, moving)
        inst = Instance(name, pid, stamp, gen_server.is_server(server))
        started(inst)
        ref = me.monitor(pid)
        try:
            ack = await me.receive(
                gen_server.started_or_down(pid, ref),
                timeout=timeout,
            )
        except TimeoutError:
            node.exit(pid, KILL)
            raise ZmeshError(f"service {name!r} did not start within {timeout} s") from None
        me.demonitor(ref)
    if type(ack) is Down:
        raise ZmeshError(f"service {name!r} failed to start: {ack.reason}")
    if not ack[2]:
        if isinstance(ack[3], tuple) and ack[3][:1] == ("taken",):
            raise NameTaken(name, ack[3][1])
        raise ZmeshError(f"service {name!r} failed to start: {ack[3]}")
    inst.expected = False
    return inst


async def take_state(node: Node, inst: Instance, timeout: float) -> Restored:
    """Stop `inst` after the messages it has queued, and return `(handoff(),)`; None
    if it had no state to give (a function, a failed or late `handoff()`). The
    instance is dead when this returns (killed if it outstays `timeout`)."""
    inst.expected = True
    state: Restored = None
    async with node.process() as me:
        ref = me.monitor(inst.pid)
        try:
            if inst.is_server:
                state = (await node.call(inst.pid, gen_server.HANDOFF, timeout=timeout),)
            else:
                node.exit(inst.pid, SHUTDOWN)
        except CallTimeout:
            node.exit(inst.pid, KILL)  # late: no state, and no more waiting
        except NoProc:
            pass  # it died (or its handoff() raised): no state
        await _await_exit(me, node, inst.pid, ref, timeout)
    return state


async def stop(node: Node, inst: Instance, reason: str, timeout: float) -> None:
    """Stop `inst` through its `terminate(reason)` after the messages it has queued;
    killed if it outstays `timeout`. The instance is dead when this returns."""
    inst.expected = True
    async with node.process() as me:
        ref = me.monitor(inst.pid)
        try:
            if inst.is_server:
                await node.call(inst.pid, (gen_server.STOP, reason), timeout=timeout)
            else:
                node.exit(inst.pid, reason if reason != NORMAL else SHUTDOWN)
        except CallTimeout:
            node.exit(inst.pid, KILL)
        except NoProc:
            pass
        await _await_exit(me, node, inst.pid, ref, timeout)


async def restore_into(node: Node, inst: Instance, restored: Restored, timeout: float) -> bool:
    """Give a running instance a moved state (`restore`); False if it failed."""
    if restored is None or not inst.is_server:
        return True
    try:
        await node.call(inst.pid, (gen_server.RESTORE, restored[0]), timeout=timeout)
    except ZmeshError:
        return False
    return True


async def _await_exit(me: Process, node: Node, pid: Pid, ref: Any, timeout: float) -> None:
    is_down: Callable[[object], bool] = lambda m: type(m) is Down and m.ref == ref  # noqa: E731
    try:
        await me.receive(is_down, timeout=timeout)
    except TimeoutError:
        node.exit(pid, KILL)
        with contextlib.suppress(TimeoutError):
            await me.receive(is_down, timeout=_KILL_WAIT)


async def _service_main(
    proc: Process,
    server: Any,
    args: tuple[Any, ...],
    name: str,
    starter: Pid,
    restored: Restored,
    takeover: bool,
    moving: Callable[[str], bool],
) -> None:
    """A service instance: take the name first (so no two ever run `init`), then run."""
    node = proc.node
    if not await _claim(node, name, proc.pid, takeover=takeover, moving=moving):
        node.send(starter, ("$gen_init", proc.pid, False, ("taken", node.whereis(name))))
        return
    if gen_server.is_server(server):
        await gen_server.serve(proc, server, list(args), starter, restored)
    else:
        node.send(starter, ("$gen_init", proc.pid, True, None))
        await server(proc, *args)


async def _claim(
    node: Node, name: str, pid: Pid, *, takeover: bool, moving: Callable[[str], bool]
) -> bool:
    """Register `name` for `pid`. A leader that has not yet seen the old instance's
    removal refuses for a moment: retry while no other owner is visible here. A fresh
    start gives up as soon as another node announces it is moving the service here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLAIM_WINDOW
    pause = 0.005
    while True:
        if not takeover and moving(name):
            return False
        if await node.register(name, pid):
            return True
        holder = node.whereis(name)
        if (holder is not None and holder != pid) or loop.time() > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
