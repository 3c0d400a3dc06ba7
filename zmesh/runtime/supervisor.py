"""Supervisor and DynamicSupervisor: GenServers that trap exits and restart children.

Strategies (OTP's): one_for_one restarts the child that exited; one_for_all restarts
every child; rest_for_one restarts the child and those started after it. Restart
types: permanent (always), transient (unless it exited "normal" or "shutdown"),
temporary (never). More than `max_restarts` restarts within `max_seconds` and the
supervisor shuts its children down and exits "shutdown", escalating to its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from zmesh.core.restart import Intensity, add_restart
from zmesh.errors import ConfigError, ZmeshError
from zmesh.runtime.gen_server import Caller, GenServer, is_server
from zmesh.runtime.loader import resolve
from zmesh.runtime.process import Process
from zmesh.terms import NORMAL, SHUTDOWN, Down, Exit, Pid

log = logging.getLogger("zmesh.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
STRATEGIES: Final = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS: Final = ("permanent", "transient", "temporary")


class SupervisorError(ZmeshError):
    """A supervisor refused a request: unknown child, already running, max_children."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start and restart one child: a GenServer class or an async function."""

    start: Any
    args: tuple[Any, ...]
    id: str
    name: str | None = None
    restart: Restart = "permanent"
    shutdown: float = 5.0


def child(
    start: type[GenServer] | Callable[..., Any] | str,
    *args: Any,
    name: str | None = None,
    id: str | None = None,
    restart: Restart = "permanent",
    shutdown: float = 5.0,
) -> ChildSpec:
    """A child spec. `start` is a GenServer subclass, an async function `fn(proc, *args)`
    or a "module:qualname"; `name` registers the child globally (again after each
    restart); `shutdown` is how long it gets to stop before it is killed."""
    if restart not in RESTARTS:
        raise ConfigError(f"restart must be one of {RESTARTS}, got {restart!r}")
    if not isinstance(shutdown, int | float) or shutdown < 0:
        raise ConfigError(f"shutdown must be seconds >= 0, got {shutdown!r}")
    child_id = id or name or _default_id(start)
    return ChildSpec(start, tuple(args), child_id, name, restart, float(shutdown))


def _default_id(start: Any) -> str:
    if isinstance(start, str):
        return start
    return f"{getattr(start, '__module__', '?')}:{getattr(start, '__qualname__', repr(start))}"


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    pid: Pid | None = None


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of `which_children`: the child's id, its pid (None when not running)."""

    id: str
    pid: Pid | None
    kind: Literal["worker", "supervisor"]
    restart: Restart


class _Base(GenServer):
    """What both supervisors share: starting, stopping and accounting for children."""

    children: list[_Child]
    intensity: Intensity
    restarts: tuple[float, ...]

    def _setup(self, max_restarts: int, max_seconds: float) -> None:
        self.intensity = Intensity(max_restarts, max_seconds)
        self.restarts = ()
        self.children = []
        self.process.trap_exit = True

    async def _start(self, spec: ChildSpec) -> Pid:
        """Start one child linked to us; its init has completed when this returns."""
        node = self.node
        target = resolve(spec.start, None)
        proc = self.process
        if is_server(target):
            from zmesh.runtime.behaviours import _named_server

            pid = node.spawn(_named_server, target, list(spec.args), self.pid, spec.name)
        elif spec.name is not None:
            pid = node.spawn(_named_function, target, spec.args, self.pid, spec.name)
        else:
            pid = node.spawn(target, *spec.args)
            proc.link(pid)
            return pid
        proc.link(pid)
        ack = await proc.receive(
            lambda m: (
                (type(m) is tuple and len(m) == 4 and m[0] == "$gen_init" and m[1] == pid)
                or (type(m) is Exit and m.pid == pid)
            ),
            timeout=max(spec.shutdown, 5.0),
        )
        if type(ack) is Exit:
            raise SupervisorError(f"child {spec.id!r} exited during init: {ack.reason!r}")
        if not ack[2]:
            await proc.receive(lambda m: type(m) is Exit and m.pid == pid, timeout=5.0)
            raise SupervisorError(f"child {spec.id!r} failed to start: {ack[3]!r}")
        return pid

    async def _stop(self, entry: _Child) -> None:
        """Shut one child down: exit "shutdown", then "kill" after its shutdown time."""
        pid = entry.pid
        if pid is None:
            return
        entry.pid = None
        proc = self.process
        ref = proc.monitor(pid)
        proc.unlink(pid)
        # An Exit already queued from this child is history now: drop it.
        proc.exit(pid, SHUTDOWN if entry.spec.shutdown > 0 else "kill")
        try:
            await proc.receive(
                lambda m: type(m) is Down and m.ref == ref, timeout=entry.spec.shutdown
            )
        except TimeoutError:
            proc.exit(pid, "kill")
            await proc.receive(lambda m: type(m) is Down and m.ref == ref, timeout=5.0)
        await _drop_exit(proc, pid)

    async def _stop_all(self, entries: Sequence[_Child]) -> None:
        for entry in reversed(entries):
            await self._stop(entry)

    def _check_intensity(self) -> None:
        """Count a restart; past the intensity, stop (children first, then "shutdown")."""
        now = asyncio.get_running_loop().time()
        self.restarts, ok = add_restart(self.restarts, now, self.intensity)
        if not ok:
            log.error(
                "supervisor %s: more than %d restarts in %s s, shutting down",
                self.pid, self.intensity.max_restarts, self.intensity.max_seconds,
            )  # fmt: skip
            self.stop(SHUTDOWN)
            return
        inspector = self.node._inspector
        if inspector is not None:
            inspector.events["supervisor_restarts"] += 1

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """Management requests; a refused one is answered with the error, not a crash."""
        try:
            return ("ok", await self._request(request))
        except ZmeshError as exc:
            return ("error", type(exc).__name__, str(exc))

    async def _request(self, request: Any) -> Any:
        raise SupervisorError(f"unknown supervisor request {request!r}")

    async def terminate(self, reason: object) -> None:
        await self._stop_all([c for c in self.children if c.pid is not None])

    def _find(self, key: str | Pid) -> _Child:
        for entry in self.children:
            if entry.spec.id == key or entry.pid == key:
                return entry
        raise SupervisorError(f"no child {key!r}")

    def _info(self) -> list[ChildInfo]:
        return [
            ChildInfo(
                c.spec.id,
                c.pid,
                "supervisor" if _is_supervisor(c.spec.start) else "worker",
                c.spec.restart,
            )
            for c in self.children
        ]


async def _named_function(
    proc: Process, fn: Callable[..., Any], args: tuple[Any, ...], starter: Pid, name: str
) -> None:
    """Register `name` globally, tell `starter` how that went, then run `fn(proc, *args)`."""
    node = proc.node
    if not await node.register(name, proc.pid):
        reason = ("name_taken", name, node.whereis(name))
        node.send(starter, ("$gen_init", proc.pid, False, reason))
        return
    node.send(starter, ("$gen_init", proc.pid, True, None))
    await fn(proc, *args)


def _restarts_after(spec: ChildSpec, reason: object) -> bool:
    if spec.restart == "permanent":
        return True
    if spec.restart == "transient":
        return reason not in (NORMAL, SHUTDOWN)
    return False


async def _drop_exit(proc: Any, pid: Pid) -> None:
    with contextlib.suppress(TimeoutError):
        await proc.receive(lambda m: type(m) is Exit and m.pid == pid, timeout=0)


class Supervisor(_Base):
    """A static supervisor: `node.start_supervisor(children, strategy=...)`, or a child
    spec `child(zmesh.Supervisor, children, strategy, max_restarts, max_seconds)` to nest."""

    async def init(
        self,
        children: Sequence[ChildSpec],
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"child ids must be unique, got {ids}")
        self._setup(max_restarts, max_seconds)
        self.strategy = strategy
        for spec in children:
            entry = _Child(spec)
            self.children.append(entry)
            try:
                entry.pid = await self._start(spec)
            except ZmeshError:
                await self._stop_all(self.children)
                raise

    async def handle_info(self, message: Any) -> None:
        if type(message) is not Exit:
            return
        entry = next((c for c in self.children if c.pid == message.pid), None)
        if entry is None:
            return  # a stale exit from a child we already stopped
        index = self.children.index(entry)
        entry.pid = None
        if not _restarts_after(entry.spec, message.reason):
            if entry.spec.restart == "temporary":
                self.children.remove(entry)
            return
        if self.strategy == "one_for_one":
            affected = [entry]
        elif self.strategy == "one_for_all":
            affected = list(self.children)
        else:
            affected = self.children[index:]
        await self._stop_all([c for c in affected if c.pid is not None])
        while True:  # a restart that fails counts as one more restart, as in OTP
            self._check_intensity()
            try:
                for other in affected:
                    if other.pid is None:
                        other.pid = await self._start(other.spec)
                return
            except ZmeshError as exc:
                log.error("supervisor %s: restart failed: %s", self.pid, exc)

    async def _request(self, request: Any) -> Any:
        op = request[0]
        if op == "which_children":
            return self._info()
        if op == "terminate_child":
            await self._stop(self._find(request[1]))
            return None
        if op == "restart_child":
            entry = self._find(request[1])
            if entry.pid is not None:
                raise SupervisorError(f"child {entry.spec.id!r} is running")
            entry.pid = await self._start(entry.spec)
            return entry.pid
        raise SupervisorError(f"unknown supervisor request {op!r}")


class DynamicSupervisor(_Base):
    """Children started on demand with `node.start_child(sup, spec)`, all one_for_one."""

    async def init(
        self, max_children: int | None = None, max_restarts: int = 3, max_seconds: float = 5.0
    ) -> None:
        if max_children is not None and (not isinstance(max_children, int) or max_children < 0):
            raise ConfigError(f"max_children must be None or an int >= 0, got {max_children!r}")
        self._setup(max_restarts, max_seconds)
        self.max_children = max_children

    async def _request(self, request: Any) -> Any:
        op = request[0]
        if op == "start_child":
            spec: ChildSpec = request[1]
            if self.max_children is not None and len(self.children) >= self.max_children:
                raise SupervisorError(f"max_children ({self.max_children}) reached")
            pid = await self._start(spec)
            self.children.append(_Child(replace(spec, id=str(pid)), pid))
            return pid
        if op == "terminate_child":
            entry = self._find(request[1])
            await self._stop(entry)
            self.children.remove(entry)
            return None
        if op == "which_children":
            return self._info()
        raise SupervisorError(f"unknown supervisor request {op!r}")

    async def handle_info(self, message: Any) -> None:
        if type(message) is not Exit:
            return
        for entry in self.children:
            if entry.pid == message.pid:
                break
        else:
            return
        entry.pid = None
        if not _restarts_after(entry.spec, message.reason):
            self.children.remove(entry)
            return
        while entry.pid is None:
            self._check_intensity()
            try:
                entry.pid = await self._start(entry.spec)
            except ZmeshError as exc:
                log.error("supervisor %s: restart failed: %s", self.pid, exc)


def _is_supervisor(start: Any) -> bool:
    return isinstance(start, type) and issubclass(start, _Base)
