"""GenServers, supervisors and services as `Node` methods: the OTP behaviours and the
distributed services, started and called on top of the node's processes.

A mixin of `Node`; the engines themselves are in gen_server.py, supervisor.py and
services.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from zmesh.errors import CallError, CallTimeout, ConfigError, NameTaken, NoProc
from zmesh.runtime import gen_server
from zmesh.runtime.config import NodeConfig
from zmesh.terms import Down, Pid

if TYPE_CHECKING:
    import contextlib

    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.gen_server import GenServer
    from zmesh.runtime.inspect import Histogram
    from zmesh.runtime.process import Process
    from zmesh.runtime.services import ServiceInfo, Services
    from zmesh.runtime.supervisor import ChildInfo, ChildSpec


class Behaviours:
    """`start`, `call`, `cast`, the supervisor calls and the service calls of `Node`."""

    name: str
    config: NodeConfig
    system_pid: Pid
    _loop: asyncio.AbstractEventLoop
    _svc: Services | None
    _calls: gen_server.CallRouter | None
    _call_latency: Histogram | None

    if TYPE_CHECKING:

        async def boot(self) -> None: ...
        def process(self) -> contextlib.AbstractAsyncContextManager[Process]: ...
        def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Pid: ...
        def send(self, dest: Pid | str, message: object) -> None: ...
        def whereis(self, name: str) -> Pid | None: ...
        def _resolve(self, dest: str | Pid) -> Pid | None: ...
        def _need_dist(self) -> Distribution: ...
        def _call_router(self) -> gen_server.CallRouter: ...

    async def start(
        self,
        server: type[GenServer] | str | None = None,
        *args: Any,
        name: str | None = None,
        on: str | None = None,
        timeout: float | None = None,
    ) -> Pid:
        """Start a GenServer `server(*args)` and return its pid once `init` has returned.

        `on` starts it on that node (by "module:qualname", see `spawn_remote`); `name`
        registers it globally, and `start` returns only once `whereis(name)` here finds
        it. Raises CallError if `init` fails, NameTaken if `name` is taken, NodeDown /
        RemoteError / CallTimeout for a remote start.
        """
        if server is None:  # pragma: no cover - the pre-0.1 spelling of boot()
            await self.boot()
            return self.system_pid
        timeout = self.config.call_timeout if timeout is None else timeout
        if on is not None and on != self.name:
            from zmesh.runtime.loader import reference

            body = [reference(server), list(args), name, timeout]
            pid = await self._need_dist().request(on, "start", body, timeout + 1.0)
            if name is not None:
                await self._await_name(name, pid, timeout)
            return pid  # type: ignore[no-any-return]
        from zmesh.runtime.loader import resolve

        cls = resolve(server, None)
        return await self._start_local(cls, list(args), name, timeout)

    async def _start_local(
        self, cls: Any, args: list[Any], name: str | None, timeout: float
    ) -> Pid:
        if not gen_server.is_server(cls):
            raise ConfigError(f"start needs a GenServer subclass, got {cls!r}")
        async with self.process() as me:
            pid = self.spawn(_named_server, cls, args, me.pid, name)
            ref = me.monitor(pid)
            ack = await me.receive(
                gen_server.started_or_down(pid, ref),
                timeout=timeout,
            )
            if type(ack) is not Down and not ack[2]:
                # Like OTP's start_link: report a failed init once the server is gone.
                await me.receive(lambda m: type(m) is Down and m.ref == ref, timeout=timeout)
            me.demonitor(ref)
        if type(ack) is Down:
            raise CallError(pid, ack.reason)
        if not ack[2]:
            if isinstance(ack[3], tuple) and ack[3][:1] == ("name_taken",):
                raise NameTaken(ack[3][1], ack[3][2])
            raise CallError(pid, ack[3])
        return pid

    async def _await_name(self, name: str, pid: Pid, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.whereis(name) != pid:
            if loop.time() > deadline:
                raise CallTimeout(f"{name!r} was registered but is not visible here yet")
            await asyncio.sleep(0.001)

    def call(
        self, target: Pid | str, request: Any, *, timeout: float | None = None
    ) -> Coroutine[Any, Any, Any]:
        """Call a GenServer (a pid or a global name) and return its reply (awaited).

        Raises CallTimeout (a TimeoutError) after `timeout`, NoProc if the target does
        not exist or its node is lost, CallError (a NoProc) if it exits during the call.
        """
        timeout = self.config.call_timeout if timeout is None else timeout
        if self._call_latency is not None:
            return self._timed_call(target, request, timeout)
        router = self._calls
        if type(target) is Pid and router is not None and router._exit_reason is None:
            # The usual case: the router's coroutine itself, one coroutine per call.
            return router.call(target, request, timeout)
        return self._call(target, request, timeout)

    async def _timed_call(self, target: Pid | str, request: Any, timeout: float) -> Any:
        """`_call`, its latency observed in the call histogram (kept while /metrics is
        served)."""
        clock = self._loop.time
        started = clock()
        try:
            return await self._call(target, request, timeout)
        finally:
            latency = self._call_latency
            if latency is not None:
                latency.observe(clock() - started)

    async def _call(self, target: Pid | str, request: Any, timeout: float) -> Any:
        svc = self._svc
        if type(target) is str and svc is not None and not svc.ready(target):
            # A service that is moving or restarting answers once it is back.
            started = self._loop.time()
            await svc.wait_ready(target, timeout)
            timeout = max(timeout - (self._loop.time() - started), 0.0)
        pid = target if type(target) is Pid else pid_or_noproc(self._resolve(target), target)  # type: ignore[arg-type]
        return await self._call_router().call(pid, request, timeout)

    def send_request(
        self, target: Pid | str, request: Any, *, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """Send a call to a GenServer now and return the future of its reply (OTP's
        `gen_server:send_request`): many calls in flight from one task, with no task
        per call. The future fails as `call` raises (a name is looked up now: NoProc
        if nothing holds it); cancelling it abandons the call."""
        timeout = self.config.call_timeout if timeout is None else timeout
        try:
            pid = target if type(target) is Pid else pid_or_noproc(self._resolve(target), target)  # type: ignore[arg-type]
        except NoProc as exc:
            failed: asyncio.Future[Any] = self._loop.create_future()
            failed.set_exception(exc)
            return failed
        return self._call_router().request(pid, request, timeout)

    def cast(self, target: Pid | str, request: Any) -> None:
        """Send a request that expects no reply; never waits, never fails (like send)."""
        self.send(target, (gen_server.CAST, request))

    # -- distributed services ------------------------------------------------------------------

    async def spawn_service(
        self,
        name: str,
        server: type[GenServer] | Callable[..., Awaitable[Any]] | str,
        *args: Any,
        restart: str = "permanent",
        quorum: bool = False,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        timeout: float | None = None,
    ) -> Pid:
        """Run `server(*args)` once in the cluster as the service `name`; return its pid
        once `whereis(name)` here finds it.

        `server` is a GenServer class or an async function `fn(proc, *args)` (by object
        or "module:qualname"; every node that may own the service must load its module).
        The spec is kept on every node; the ring owner of `name` runs the instance,
        registered globally as `name`; when that node is lost the next owner starts it
        again, and when the ring moves it (a join, a graceful leave) it moves with the
        state from `handoff()` to `restore()`. `restart`: "permanent" (restarted after
        any exit) or "transient" (not after a "normal" or "shutdown" exit, which removes
        the service), within `max_restarts` in `max_seconds`, past which the service is
        removed. `quorum=True` runs it only on a side of a partition holding a strict
        majority of the members this node has seen (less those that left gracefully).

        Spawning a name whose spec exists returns the running pid if the spec is the same
        (server, args, restart, quorum), else raises NameTaken, as does a name registered
        to a process that is not a service. Raises RemoteError if the owner cannot start
        it (the spec is then removed), CallTimeout if it is not running within `timeout`.
        """
        timeout = self.config.call_timeout if timeout is None else timeout
        return await self._need_services().spawn(
            name, server, args, restart, quorum, max_restarts, max_seconds, timeout
        )

    async def stop_service(self, name: str, *, timeout: float | None = None) -> None:
        """Remove the service `name` cluster-wide and stop its instance through its
        `terminate("shutdown")`; returns once the name is gone here. No effect if there
        is no such service."""
        timeout = self.config.call_timeout if timeout is None else timeout
        await self._need_services().stop_service(name, timeout)

    def services(self) -> list[ServiceInfo]:
        """Every service of the cluster with its node and pid (both None while it is
        being started or moved), sorted by name, from the local replica."""
        return self._svc.services() if self._svc is not None else []

    def _need_services(self) -> Services:
        if self._svc is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._svc

    # -- supervisors ---------------------------------------------------------------------------

    async def start_supervisor(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
    ) -> Pid:
        """Start a Supervisor over `children` (see `zmesh.child`); returns once all started."""
        from zmesh.runtime.supervisor import Supervisor

        args = (list(children), strategy, max_restarts, max_seconds)
        return await self.start(Supervisor, *args, name=name)

    async def start_dynamic_supervisor(
        self,
        *,
        max_children: int | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
    ) -> Pid:
        """Start a DynamicSupervisor; add children with `start_child`."""
        from zmesh.runtime.supervisor import DynamicSupervisor

        return await self.start(
            DynamicSupervisor, max_children, max_restarts, max_seconds, name=name
        )

    async def _supervisor_request(self, sup: Pid | str, *request: Any) -> Any:
        from zmesh.runtime.supervisor import SupervisorError

        reply = await self.call(sup, request)
        if reply[0] == "error":
            raise SupervisorError(reply[2])
        return reply[1]

    async def start_child(self, sup: Pid | str, spec: ChildSpec) -> Pid:
        """Start `spec` under the DynamicSupervisor `sup`; SupervisorError at max_children."""
        pid: Pid = await self._supervisor_request(sup, "start_child", spec)
        return pid

    async def terminate_child(self, sup: Pid | str, child: str | Pid) -> None:
        """Stop a child (by id, or by pid for a DynamicSupervisor); it is not restarted."""
        await self._supervisor_request(sup, "terminate_child", child)

    async def restart_child(self, sup: Pid | str, child_id: str) -> Pid:
        """Start again a child stopped with `terminate_child`."""
        pid: Pid = await self._supervisor_request(sup, "restart_child", child_id)
        return pid

    async def which_children(self, sup: Pid | str) -> list[ChildInfo]:
        """The supervisor's children in start order, with their pids (None if stopped)."""
        rows: list[ChildInfo] = await self._supervisor_request(sup, "which_children")
        return rows


def _named_server(
    proc: Process, cls: type[GenServer], args: list[Any], starter: Pid, name: str | None
) -> Coroutine[Any, Any, None]:
    """The server's coroutine: the GenServer engine itself when there is no name (no
    frame between the task and the engine), else register `name` first."""
    if name is None:
        return gen_server.serve(proc, cls, args, starter)
    return _register_then_serve(proc, cls, args, starter, name)


async def _register_then_serve(
    proc: Process, cls: type[GenServer], args: list[Any], starter: Pid, name: str
) -> None:
    """Register `name`, then run the GenServer engine."""
    node = proc.node
    if not await node.register(name, proc.pid):
        owner = node.whereis(name)
        node.send(starter, ("$gen_init", proc.pid, False, ("name_taken", name, owner)))
        return
    await gen_server.serve(proc, cls, args, starter)


def pid_or_noproc(pid: Pid | None, name: str) -> Pid:
    """`pid`, or NoProc naming the unregistered `name`."""
    if pid is None:
        raise NoProc(f"no process is registered as {name!r}")
    return pid
