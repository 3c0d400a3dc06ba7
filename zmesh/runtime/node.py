"""The node: owns the process table, routes messages, and holds the node's subsystems
(registry, groups, live ring, services, inspector) and its distribution.

Links, monitors and exit signals are in `local_signals.py`, the GenServer, supervisor
and service calls in `behaviours.py` (both mixins of `Node`). Everything that crosses
to another node goes through `self._dist` (see `dist.py`); a node started with
`listen=None` is local-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from zmesh.core.advertise import check_advertise
from zmesh.errors import (
    ConfigError,
    ConnectError,
    ZmeshError,
)
from zmesh.runtime import gen_server
from zmesh.runtime.behaviours import Behaviours
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.data import DataMixin
from zmesh.runtime.environment import REAL, Environment
from zmesh.runtime.inspect import Inspector, all_process_rows
from zmesh.runtime.local_signals import Signals
from zmesh.runtime.process import ExitProcess, Process
from zmesh.terms import KILLED, NORMAL, SHUTDOWN, Pid, Ref, crash_reason, new_pid

if TYPE_CHECKING:
    from zmesh.core.ring import HashRing
    from zmesh.discovery import Strategy
    from zmesh.runtime.curve import Curve
    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.groups import Groups
    from zmesh.runtime.inspect import Histogram
    from zmesh.runtime.live_ring import LiveRing
    from zmesh.runtime.registry import Registry
    from zmesh.runtime.services import Services

log = logging.getLogger("zmesh.node")

_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


class Node(Signals, Behaviours, DataMixin):
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

    With `curve` (a `zmesh.Curve`), every connection is encrypted and authenticated
    with CurveZMQ: only keys on the allow-list connect, each under the name its
    certificate binds; the node's own name must be its key's. Seeds and `connect`
    take `NAME@tcp://HOST:PORT` so the server key is known before the handshake.

    `discovery` lists ways to find peers, polled forever: `zmesh.discovery` strategies
    (`Static`, `Range`, `HostsFile`, or any `zmesh.Strategy`) or their `--discover`
    spellings (`"range:127.0.0.1:7000-7010"`); a malformed spelling raises ConfigError.

    `advertise` (else `$ZMESH_ADVERTISE`) is the address peers are told to dial, when
    it differs from the bound one (NAT, containers). Binding a wildcard such as
    `tcp://0.0.0.0:7000` without it advertises the host's routable IPv4 address (the
    source address of its outward route), or raises ConfigError when there is none.
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
        curve: Curve | None = None,
        discovery: Sequence[Strategy | str] = (),
        advertise: str | None = None,
        env: Environment | None = None,
    ) -> None:
        #: Clock, randomness and transport (see zmesh.runtime.environment): real ones
        #: unless a simulation passes its own.
        self.env = env or REAL
        self.name = name if name is not None else f"zmesh-{os.getpid()}@{socket.gethostname()}"
        _check_node_name(self.name)
        #: Connected but out of the cluster's membership view (see the class docstring).
        self.hidden = bool(hidden)
        # The incarnation: a restarted node gets a larger one, so its old pids are stale.
        self.creation = self.env.creation()
        self.config = config or NodeConfig()
        self._listen = listen
        self._cookie = cookie.encode() if isinstance(cookie, str) else cookie
        self._seeds = list(seeds)
        advertise = advertise if advertise is not None else os.environ.get("ZMESH_ADVERTISE")
        self._advertise = check_advertise(advertise) if advertise else None
        self._discovery: list[Strategy] = _strategies(discovery)
        self._load = list(load)
        #: CurveZMQ encryption and the key allow-list (see `zmesh.Curve`); None: cookie only.
        self.curve = curve
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
        self._call_latency: Histogram | None = None  # of calls made here, seconds
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

            self._dist = Distribution(
                self, self._listen, self._cookie, self._load, self.curve, self._advertise
            )
        elif self._seeds or self._discovery:
            raise ConfigError(
                "seeds or discovery given to a node without `listen`: nothing to join with"
            )
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
            await self._dist.start(self._seeds, self._discovery)

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

    @property
    def advertised(self) -> str | None:
        """The address peers are told to dial: `advertise` (else `$ZMESH_ADVERTISE`),
        else the bound address with a wildcard host replaced by the host's routable IP.
        None on a local-only node or before `boot`."""
        return self._dist.advertised if self._dist is not None else None

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
        if type(coro) is not CoroutineType and not asyncio.iscoroutine(coro):
            del self._procs[proc.pid.id]
            raise ConfigError(f"spawn needs an async function, got {fn!r}")
        task = self._loop.create_task(coro)
        proc._task = task
        task.add_done_callback(proc)
        return proc.pid

    def _new_process(self, kind: type[Process] = Process) -> Process:
        if self._stopping:
            raise ZmeshError(f"node {self.name!r} is stopping")
        pid = new_pid(self.name, next(self._ids), self.creation)
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

    # -- the cluster (delegated to the distribution layer) ---------------------------------

    def _need_dist(self) -> Distribution:
        if self._dist is None:
            raise ConfigError(f"node {self.name!r} has no `listen` address: it cannot reach peers")
        return self._dist

    async def connect(self, address: str, *, timeout: float | None = None) -> str:
        """Join the node at `address` (and, transitively, its peers); return its name.

        `address` may be written `NAME@tcp://HOST:PORT`: with CURVE this pins the server
        key to NAME's certificate (a plain address works only once the node there is
        known, from gossip or an earlier connect); without CURVE the name is ignored.
        Raises ConnectError: unreachable within `timeout`, wrong cookie, name clash,
        protocol mismatch, a security refusal ("security"); the message says which.
        """
        return await self._need_dist().connect(address, timeout)

    def reload_allow_list(self) -> list[str]:
        """Re-read the CURVE allow-list now (it is also re-read when its files change);
        peers whose keys are gone are disconnected: their names. [] without CURVE."""
        if self._dist is None:
            return []
        return self._dist.reload_allow_list()

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

    async def node_processes(
        self, node: str, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Every process row of node `node` (as `info()["processes"]`, which holds only
        the busiest thousand), fetched in pages that each fit in one message."""
        return await all_process_rows(self, node, timeout)

    def stats(self) -> dict[str, int]:
        """Counters: processes, peers, every kind of refused inbound frame, registry
        operations (`registry_*`) and services (`services`, `service_*`)."""
        out = {"processes": self._count()}
        if self._dist is not None:
            out.update(self._dist.stats())
        if self._registry is not None:
            out.update({f"registry_{k}": v for k, v in self._registry.counters.items()})
        if self._svc is not None:
            out.update(self._svc.stats())
        return out


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ConfigError(f"a registered name must be a str of 1-255 characters, got {name!r}")


def _check_node_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 255 or any(c.isspace() for c in name):
        raise ConfigError(f"node name must be 1-255 characters without spaces, got {name!r}")


def _strategies(discovery: Sequence[Strategy | str]) -> list[Strategy]:
    """The strategies for `discovery`, specs parsed; zmesh.discovery is loaded only when
    there is one (an idle node without discovery does not carry it)."""
    if not discovery:
        return []
    from zmesh.discovery import from_spec

    return [from_spec(s) if isinstance(s, str) else s for s in discovery]
