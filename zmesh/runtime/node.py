"""The node: owns the process table and the local semantics of links, monitors and exits.

Everything that crosses to another node goes through `self._dist` (see `dist.py`);
a node started with `listen=None` is local-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from zmesh.errors import (
    CallError,
    CallTimeout,
    ConfigError,
    ConnectError,
    NameTaken,
    NoProc,
    ZmeshError,
)
from zmesh.runtime import gen_server
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.inspect import Inspector
from zmesh.runtime.process import ExitProcess, Process
from zmesh.terms import KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, Down, Exit, Pid, Ref, crash_reason

if TYPE_CHECKING:
    from zmesh.core.ring import HashRing
    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.gen_server import GenServer
    from zmesh.runtime.groups import Groups
    from zmesh.runtime.live_ring import LiveRing
    from zmesh.runtime.registry import Registry
    from zmesh.runtime.services import ServiceInfo, Services
    from zmesh.runtime.supervisor import ChildInfo, ChildSpec

log = logging.getLogger("zmesh.node")

_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


class Node:
    """A zmesh node: an async context manager that hosts processes and joins a cluster.

    `listen` is the ZeroMQ endpoint to bind (port 0 picks a free port; None makes a
    local-only node). `cookie` is the cluster's shared secret; `seeds` are addresses
    to join (retried until they answer); `load` names the modules whose functions
    and classes peers may start here by "module:qualname".

    A `hidden` node (Erlang's `-hidden`) talks to the cluster like any other node but
    stays out of its membership: its peers do not list it in `nodes()`, put it on
    their ring, make it a registry leader or tell other nodes about it. It connects
    to every visible node its seed knows, owns no ring keys and never leads the
    registry; for short-lived tools (the `zmesh` queries) and clients of a cluster.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        listen: str | None = "tcp://127.0.0.1:0",
        cookie: str | bytes | None = None,
        seeds: Sequence[str] = (),
        load: Sequence[str] = (),
        config: NodeConfig | None = None,
        hidden: bool = False,
    ) -> None:
        self.name = name if name is not None else f"zmesh-{os.getpid()}@{socket.gethostname()}"
        _check_node_name(self.name)
        #: Connected but out of the cluster's membership view (see the class docstring).
        self.hidden = bool(hidden)
        # The incarnation: a restarted node gets a larger one, so its old pids are stale.
        self.creation = _next_creation()
        self.config = config or NodeConfig()
        self._listen = listen
        self._cookie = cookie.encode() if isinstance(cookie, str) else cookie
        self._seeds = list(seeds)
        self._load = list(load)
        self._procs: dict[int, Process] = {}
        self._ids = itertools.count(1)
        self._refs = itertools.count(1)
        # Pid 0 is the node itself: the sender of exit signals not sent by a process.
        self.system_pid = Pid(self.name, 0, self.creation)
        self._exit_hooks: list[Callable[[Pid, object], None]] = []
        self._seed_listeners: list[Callable[[str, ConnectError], None]] = []
        self._dist: Distribution | None = None
        self._registry: Registry | None = None
        self._groups: Groups | None = None
        self._ring: LiveRing | None = None
        self._svc: Services | None = None
        self._started = False
        self._stopping = False
        self._gc_owner = False
        self._services: list[Any] = []  # subsystems with `async stop()`, stopped in reverse
        self._calls: gen_server.CallRouter | None = None  # made by the first call
        self._call_observer: Callable[[float], None] | None = None  # call latency, seconds
        self._inspector: Inspector | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment] # set by boot()

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.address or 'local'} {self._count()} processes>"

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.boot()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def boot(self) -> None:
        """Bind, import the loadable modules and join the seeds (in the background).

        `async with node:` calls this; call it directly to manage the lifetime by hand.
        """
        if self._started:
            raise ConfigError(f"node {self.name!r} is already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._tune_gc()
        if self._listen is not None:
            from zmesh.runtime.dist import Distribution

            self._dist = Distribution(self, self._listen, self._cookie, self._load)
        elif self._seeds:
            raise ConfigError("seeds given to a node without `listen`: nothing to join with")
        from zmesh.runtime.groups import Groups
        from zmesh.runtime.live_ring import LiveRing
        from zmesh.runtime.registry import Registry
        from zmesh.runtime.services import Services

        self._registry = Registry(self)
        self._groups = Groups(self)
        self._ring = LiveRing(self)
        self._svc = Services(self)
        self._inspector = Inspector(self)
        await self._inspector.start()
        self._services.append(self._inspector)
        if self._dist is not None:
            await self._dist.start(self._seeds)

    async def stop(self) -> None:
        """Tell peers we leave, end every process, close every socket; idempotent."""
        if not self._started or self._stopping:
            return
        if self._svc is not None:
            await self._svc.leave()  # hand services over while the peers still hear us
        self._stopping = True
        for service in reversed(self._services):
            with contextlib.suppress(Exception):
                await service.stop()
        if self._dist is not None:
            await self._dist.leave()
        tasks = []
        for proc in list(self._procs.values()):
            self._kill(proc, SHUTDOWN)
            if proc._task is not None:
                tasks.append(proc._task)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._dist is not None:
            await self._dist.close()
        self._restore_gc()

    async def abort(self) -> None:
        """Die at once, as a killed OS process would: no goodbye to peers, every process
        gone, every socket closed (peers see the connections drop). For fault tests."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._svc is not None:
            await self._svc.close()
        if self._inspector is not None:
            await self._inspector.stop()
        dist = self._dist
        if dist is not None:
            dist.pause()
            dist._left = True  # nothing more leaves this node
        tasks = []
        for proc in list(self._procs.values()):
            self._kill(proc, KILLED)
            if proc._task is not None:
                tasks.append(proc._task)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if dist is not None:
            await dist.close(linger=0.0)
        self._restore_gc()

    def _tune_gc(self) -> None:
        global _gc_users, _gc_saved
        thresholds = self.config.gc_thresholds
        if thresholds is None:
            return
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(*thresholds)
        _gc_users += 1
        self._gc_owner = True

    def _restore_gc(self) -> None:
        global _gc_users
        if not self._gc_owner:
            return
        self._gc_owner = False
        _gc_users -= 1
        if _gc_users == 0 and _gc_saved is not None:
            gc.set_threshold(*_gc_saved)

    # -- identity -------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """The bound endpoint (e.g. "tcp://127.0.0.1:53211"), or None for a local-only node."""
        return self._dist.address if self._dist is not None else None

    def make_ref(self) -> Ref:
        """A reference unique across this node's incarnation."""
        return Ref(self.name, next(self._refs), self.creation)

    # -- processes ------------------------------------------------------------------

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Pid:
        """Start `fn(proc, *args)` as a new process; return its pid at once.

        `fn` is an async function; its first argument is the `Process`. It exits
        "normal" when `fn` returns, and with a crash reason naming the exception when
        `fn` raises.
        """
        proc = self._new_process()
        coro = fn(proc, *args)
        if not asyncio.iscoroutine(coro):
            del self._procs[proc.pid.id]
            raise ConfigError(f"spawn needs an async function, got {fn!r}")
        task = self._loop.create_task(coro)
        proc._task = task
        task.add_done_callback(proc)
        return proc.pid

    def _new_process(self, kind: type[Process] = Process) -> Process:
        if self._stopping:
            raise ZmeshError(f"node {self.name!r} is stopping")
        pid = Pid(self.name, next(self._ids), self.creation)
        proc = self._procs[pid.id] = kind(self, pid)
        return proc

    def _call_router(self) -> gen_server.CallRouter:
        """The process that receives this node's call replies (made again if killed)."""
        router = self._calls
        if router is None or router._exit_reason is not None:
            made = self._new_process(gen_server.CallRouter)
            assert isinstance(made, gen_server.CallRouter)
            router = self._calls = made
        return router

    @contextlib.asynccontextmanager
    async def process(self) -> AsyncIterator[Process]:
        """A mailbox for the calling task: a `Process` that exits "normal" with the block."""
        proc = self._new_process()
        try:
            yield proc
        finally:
            if proc._exit_reason is None:
                self._terminate(proc, NORMAL)

    def _on_task_done(self, proc: Process, task: asyncio.Task[Any]) -> None:
        if proc._exit_reason is not None:
            return  # already terminated by an exit signal
        if task.cancelled():
            reason: object = KILLED
        else:
            exc = task.exception()
            if exc is None:
                reason = NORMAL
            elif isinstance(exc, ExitProcess):
                reason = exc.reason
            else:
                reason = crash_reason(exc)
                log.error("process %s crashed: %s", proc.pid, reason, exc_info=exc)
        self._terminate(proc, reason)

    def processes(self) -> list[Pid]:
        """Pids of the live processes on this node (not the node's own call router)."""
        return [p.pid for p in self._listed()]

    def _count(self) -> int:
        """How many processes `processes()` lists, without building the list."""
        calls = self._calls
        return len(self._procs) - (calls is not None and calls.alive)

    def _listed(self) -> list[Process]:
        """The processes that inspection shows: all but the call router."""
        calls = self._calls
        return [p for p in self._procs.values() if p is not calls]

    def is_alive(self, pid: Pid) -> bool:
        """Whether `pid` names a live process on this node."""
        return self._local(pid) is not None

    def _local(self, pid: Pid) -> Process | None:
        if pid.node != self.name or pid.creation != self.creation:
            return None
        return self._procs.get(pid.id)

    def on_exit(self, hook: Callable[[Pid, object], None]) -> None:
        """Call `hook(pid, reason)` whenever a local process exits (for subsystems)."""
        self._exit_hooks.append(hook)

    # -- messages -------------------------------------------------------------------

    def send(self, dest: Pid | str, message: object) -> None:
        """Send `message` to a pid (local or remote) or a globally registered name.

        Never waits. Per sender and receiver, messages arrive in the order sent. A
        message to a dead pid or an unknown name is dropped, as in Erlang; a message
        that cannot be encoded raises EncodeError; a full outgoing queue raises
        QueueFull.
        """
        if type(dest) is Pid:
            pid: Pid | None = dest
        else:
            svc = self._svc
            if svc is not None and type(dest) is str and svc.intercept(dest, message):
                return  # held for a service that is moving or restarting
            pid = self._resolve(dest)
        if pid is None:
            return
        if pid.node == self.name:
            if pid.creation == self.creation:
                proc = self._procs.get(pid.id)
                if proc is not None:
                    proc.deliver(message)
        elif self._dist is not None:
            self._dist.send(pid, message)

    def _resolve(self, dest: str | Pid) -> Pid | None:
        if isinstance(dest, str):
            return self.whereis(dest)
        raise TypeError(f"send needs a Pid or a registered name, got {dest!r}")

    # -- the global registry and process groups -----------------------------------------------

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under `name`, from the local replica (no round trip)."""
        return self._registry.whereis(name) if self._registry is not None else None

    async def register(self, name: str, pid: Pid) -> bool:
        """Register `pid` under `name` across the cluster: True, or False if the name is
        taken (or `pid` is dead). Of several racing registrations exactly one wins while
        the cluster is connected. The name goes when the process exits or its node is lost.
        A hidden node registers through its visible peers: NodeDown if it has none.
        """
        _check_name(name)
        return await self._need_registry().register(name, pid)

    async def unregister(self, name: str) -> None:
        """Remove `name` everywhere (no effect if it is not registered)."""
        await self._need_registry().unregister(name)

    def registered(self) -> list[str]:
        """Every registered name, sorted, from the local replica."""
        return self._registry.registered() if self._registry is not None else []

    @property
    def pg(self) -> Groups:
        """Process groups: `join(group, pid)`, `leave`, `members`, `local_members`."""
        if self._groups is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._groups

    @property
    def ring(self) -> HashRing:
        """The consistent-hash ring over the cluster's current members: this node and its
        visible peers (a hidden node is on no ring, its own included: alone, its ring is
        empty).

        Replaced (never mutated) on every node up/down; `watch_ring` reports changes.
        """
        if self._ring is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._ring.ring

    def watch_ring(self, watcher: Callable[[HashRing], None]) -> Callable[[], None]:
        """Call `watcher(ring)` after every membership change; returns an unsubscribe."""
        if self._ring is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._ring.watch(watcher)

    def ring_changes(self) -> AsyncIterator[HashRing]:
        """An async iterator of the ring after each membership change."""
        if self._ring is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._ring.changes()

    def subscribe_nodes(
        self, listener: Callable[[str, str], None], *, include_hidden: bool = False
    ) -> Callable[[], None]:
        """Call `listener(event, name)` with event "up" or "down" for every peer change
        (hidden peers' too only if `include_hidden`); returns an unsubscribe function."""
        return self._need_dist().subscribe(listener, include_hidden=include_hidden)

    def on_seed_error(self, listener: Callable[[str, ConnectError], None]) -> Callable[[], None]:
        """Call `listener(address, error)` for every failed background attempt to join a
        seed (`error.reason` says why); returns an unsubscribe function.

        The seed loop keeps retrying, so one cause is reported again on every retry: a
        tool that prints them should de-duplicate by `(address, error.reason)`. May be
        called before the node starts, so that the first attempt is reported too.
        """
        self._seed_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._seed_listeners:
                self._seed_listeners.remove(listener)

        return unsubscribe

    def _seed_failed(self, address: str, error: ConnectError) -> None:
        for listener in list(self._seed_listeners):
            try:
                listener(address, error)
            except Exception:
                log.exception("seed error listener %r failed", listener)

    def _need_registry(self) -> Registry:
        if self._registry is None:
            raise ConfigError(f"node {self.name!r} is not started")
        return self._registry

    # -- exit signals, links, monitors --------------------------------------------------

    def exit(self, pid: Pid, reason: object) -> None:
        """Send an exit signal to `pid` from the node itself.

        "normal" is ignored unless the target traps exits; "kill" cannot be trapped
        and takes the target down with reason "killed"; any other reason takes it
        down with that reason, or arrives as `Exit(pid, reason)` if it traps exits.
        """
        self._send_exit(self.system_pid, pid, reason, linked=False)

    def _send_exit(self, sender: Pid, target: Pid, reason: object, *, linked: bool) -> None:
        proc = self._local(target)
        if proc is not None:
            self._exit_signal(proc, sender, reason, linked=linked)
        elif target.node != self.name and self._dist is not None:
            self._dist.send_exit(sender, target, reason, linked)

    def _exit_signal(self, proc: Process, sender: Pid, reason: object, *, linked: bool) -> None:
        """Apply an exit signal from `sender` to the local process `proc`."""
        if proc._exit_reason is not None:
            return
        if linked and proc.links is not None:
            proc.links.discard(sender)
        if reason == KILL and not linked:
            self._kill(proc, KILLED)
        elif proc.trap_exit:
            proc.deliver(Exit(sender, reason))
        elif reason != NORMAL:
            self._kill(proc, reason)

    def _kill(self, proc: Process, reason: object) -> None:
        self._terminate(proc, reason)
        if proc._task is not None:
            proc._task.cancel()
        else:
            proc._abort_receive(reason)

    def _terminate(self, proc: Process, reason: object) -> None:
        """Mark `proc` dead with `reason` and fire its links, monitors and exit hooks."""
        if proc._exit_reason is not None:
            return
        proc._exit_reason = reason
        pid = proc.pid
        self._procs.pop(pid.id, None)
        proc._mailbox = None
        dist = self._dist
        if proc.monitors:
            for ref, target in proc.monitors.items():
                self._drop_watch(ref, pid, target)
        if proc.links:
            for other in proc.links:
                local = self._local(other)
                if local is not None:
                    if local.links is not None:
                        local.links.discard(pid)
                    self._exit_signal(local, pid, reason, linked=True)
                elif dist is not None:
                    dist.send_exit(pid, other, reason, True)
        if proc.watchers:
            for ref, watcher in proc.watchers.items():
                self._deliver_down(watcher, ref, pid, reason)
        for hook in self._exit_hooks:
            try:
                hook(pid, reason)
            except Exception:
                log.exception("exit hook %r failed for %s", hook, pid)

    def _deliver_down(self, watcher: Pid, ref: Ref, pid: Pid, reason: object) -> None:
        local = self._local(watcher)
        if local is not None:
            if local.monitors is not None and local.monitors.pop(ref, None) is not None:
                local.deliver(Down(ref, pid, reason))
        elif self._dist is not None:
            self._dist.send_down(watcher, ref, pid, reason)

    def _drop_watch(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        local = self._local(target)
        if local is not None:
            if local.watchers is not None:
                local.watchers.pop(ref, None)
        elif self._dist is not None:
            self._dist.send_demonitor(ref, watcher, target)

    def _link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        if proc.links is None:
            proc.links = set()
        if pid in proc.links:
            return
        other = self._local(pid)
        if other is not None:
            proc.links.add(pid)
            if other.links is None:
                other.links = set()
            other.links.add(proc.pid)
        elif pid.node == self.name or self._dist is None:
            # Linking to a dead process is an immediate exit signal "noproc".
            self._exit_signal(proc, pid, NOPROC, linked=True)
        else:
            proc.links.add(pid)
            self._dist.send_link(proc.pid, pid)

    def _unlink(self, proc: Process, pid: Pid) -> None:
        if proc.links is None or pid not in proc.links:
            return
        proc.links.discard(pid)
        other = self._local(pid)
        if other is not None:
            if other.links is not None:
                other.links.discard(proc.pid)
        elif self._dist is not None:
            self._dist.send_unlink(proc.pid, pid)

    def _monitor(self, proc: Process, pid: Pid, ref: Ref | None = None) -> Ref:
        if ref is None:
            ref = self.make_ref()
        if proc.monitors is None:
            proc.monitors = {}
        proc.monitors[ref] = pid
        target = self._local(pid)
        if target is not None:
            if target.watchers is None:
                target.watchers = {}
            target.watchers[ref] = proc.pid
        elif pid.node == self.name or self._dist is None:
            self._deliver_down(proc.pid, ref, pid, NOPROC)
        else:
            self._dist.send_monitor(ref, proc.pid, pid)
        return ref

    def _demonitor(self, proc: Process, ref: Ref) -> None:
        if proc.monitors is None:
            return
        target = proc.monitors.pop(ref, None)
        if target is not None:
            self._drop_watch(ref, proc.pid, target)

    # -- the cluster (delegated to the distribution layer) ---------------------------------

    def _need_dist(self) -> Distribution:
        if self._dist is None:
            raise ConfigError(f"node {self.name!r} has no `listen` address: it cannot reach peers")
        return self._dist

    async def connect(self, address: str, *, timeout: float | None = None) -> str:
        """Join the node at `address` (and, transitively, its peers); return its name.

        Raises ConnectError: unreachable within `timeout`, wrong cookie, name clash,
        protocol mismatch; the message says which.
        """
        return await self._need_dist().connect(address, timeout)

    def nodes(self, *, include_hidden: bool = False) -> list[str]:
        """Names of the connected peers, sorted; this node excluded, and hidden peers too
        unless `include_hidden`."""
        if self._dist is None:
            return []
        return self._dist.nodes(include_hidden=include_hidden)

    def peer_stats(self) -> dict[str, dict[str, int]]:
        """Traffic per connected peer (hidden ones included), by name: messages_in,
        messages_out, bytes_in, bytes_out, frames_in, frames_out, envelopes_in.

        Counted since the session came up (frames and bytes out: since its connection
        opened), so a reconnect starts them again.
        """
        return self._dist.peer_stats() if self._dist is not None else {}

    async def spawn_remote(
        self, node: str, fn: Callable[..., Any] | str, *args: Any, timeout: float | None = None
    ) -> Pid:
        """Start `fn(proc, *args)` on node `node`; `fn` is a module-level async function or
        its "module:qualname". The target runs only functions of modules it was told to
        load. Raises RemoteError (refused), NodeDown (not connected), CallTimeout."""
        if node == self.name:
            from zmesh.runtime.loader import resolve

            return self.spawn(resolve(fn, None), *args)
        return await self._need_dist().spawn_remote(node, fn, args, timeout)

    def info(self) -> dict[str, Any]:
        """A snapshot for inspection tools; its keys are documented in docs/cli.md."""
        return (self._inspector or Inspector(self)).info()

    async def node_info(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        """`info()` of node `node` (this one or a connected peer)."""
        if node == self.name:
            return self.info()
        result: dict[str, Any] = await self._need_dist().request(node, "info", None, timeout)
        return result

    # -- GenServer ---------------------------------------------------------------------------

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
                lambda m: (
                    (type(m) is tuple and len(m) == 4 and m[0] == "$gen_init" and m[1] == pid)
                    or (type(m) is Down and m.ref == ref)
                ),
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

    async def call(self, target: Pid | str, request: Any, *, timeout: float | None = None) -> Any:
        """Call a GenServer (a pid or a global name) and return its reply.

        Raises CallTimeout (a TimeoutError) after `timeout`, NoProc if the target does
        not exist or its node is lost, CallError (a NoProc) if it exits during the call.
        """
        timeout = self.config.call_timeout if timeout is None else timeout
        if type(target) is not Pid and self._svc is not None and type(target) is str:
            # A service that is moving or restarting answers once it is back.
            started = self._loop.time()
            await self._svc.wait_ready(target, timeout)
            timeout = max(timeout - (self._loop.time() - started), 0.0)
        pid = target if type(target) is Pid else pid_or_noproc(self._resolve(target), target)  # type: ignore[arg-type]
        return await gen_server.call(self, pid, request, timeout)

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

    def stats(self) -> dict[str, int]:
        """Counters: processes, peers, and every kind of refused inbound frame."""
        out = {"processes": self._count()}
        if self._dist is not None:
            out.update(self._dist.stats())
        if self._svc is not None:
            out.update(self._svc.stats())
        return out


async def _named_server(
    proc: Process, cls: type[GenServer], args: list[Any], starter: Pid, name: str | None
) -> None:
    """Register `name` (if any), then run the GenServer engine."""
    if name is not None:
        node = proc.node
        if not await node.register(name, proc.pid):
            owner = node.whereis(name)
            node.send(starter, ("$gen_init", proc.pid, False, ("name_taken", name, owner)))
            return
    await gen_server.serve(proc, cls, args, starter)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ConfigError(f"a registered name must be a str of 1-255 characters, got {name!r}")


_last_creation = 0


def _next_creation() -> int:
    """Milliseconds since the epoch, but always above the last one this process made:
    a node restarted within the same millisecond still gets a new incarnation."""
    global _last_creation
    _last_creation = max(time.time_ns() // 1_000_000, _last_creation + 1)
    return _last_creation


def _check_node_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 255 or any(c.isspace() for c in name):
        raise ConfigError(f"node name must be 1-255 characters without spaces, got {name!r}")


def pid_or_noproc(pid: Pid | None, name: str) -> Pid:
    """`pid`, or NoProc naming the unregistered `name`."""
    if pid is None:
        raise NoProc(f"no process is registered as {name!r}")
    return pid
