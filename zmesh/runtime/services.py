"""Distributed services (Horde/Swarm): one instance per spec, on its ring owner, kept alive.

Every node holds the replicated `ServiceTable`. A spec is created by the name's leader
(the registry's rendezvous choice), which refuses a second, different spec of the same
name, and broadcast to every node; a node that comes up gets the whole table, what the
sender can run, and who the members are. Each node then runs `plan` over what changed:
the owner of a name (the first node walking the ring from it that can run the service)
starts its instance, registered globally under the name; an instance whose owner
changed moves there; an instance whose spec is gone stops.

Failover: a lost node leaves the ring, so the next owner finds the name unregistered
and starts the service from its spec (no state: a killed node cannot hand any over).
Handoff: a node that joins, or one that leaves gracefully, makes the ring move
services; the old instance's `handoff()` value goes to the new one's `restore`.

The layer is split by seam: this module plans and reacts to events; `service_specs`
replicates the spec table (creation and removal through the name's leader);
`service_moves` moves an instance with its state (hold, handoff, takeover, release);
`service_instances` starts and stops instances; `service_holds` keeps messages sent by
name while a service moves or restarts.

Never two at once: an instance takes its name before its `init` runs, and the registry
grants a name to one process only while the cluster is connected; after a partition
heals, the registry's conflict rule picks one and the loser is stopped through its
`terminate` (reason "name_conflict"), after the messages it had queued.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmesh.core import service_wire as wire
from zmesh.core.registry_state import leader_for
from zmesh.core.restart import Intensity, add_restart
from zmesh.core.service_table import (
    Members,
    Move,
    ServiceSpec,
    ServiceTable,
    Start,
    Stop,
    has_quorum,
    plan,
)
from zmesh.core.ticks import until_next
from zmesh.errors import (
    ConfigError,
    NameTaken,
    NoProc,
    RemoteError,
    ZmeshError,
)
from zmesh.runtime import service_instances as instances
from zmesh.runtime.loader import resolve
from zmesh.runtime.service_holds import Holds
from zmesh.runtime.service_instances import Instance
from zmesh.runtime.service_moves import Moves
from zmesh.runtime.service_specs import Specs
from zmesh.terms import NAME_CONFLICT, NORMAL, SHUTDOWN, Pid

if TYPE_CHECKING:
    from zmesh.core.ring import HashRing
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.services")

_SYNC_WAIT = 1.0  # how long fresh starts wait for a new peer's tables at most
_FAILURE_MEMORY = 60.0  # seconds a given-up service's reason is kept for `spawn_service`


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One row of `Node.services()`: where the service runs (None, None while it is
    being started or moved)."""

    name: str
    node: str | None
    pid: Pid | None


class Services(Specs, Moves):
    """One node's part of the services layer (made, and stopped, by `Node`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.table = ServiceTable()
        self.members = Members()
        if not node.hidden:
            self.members.up(node.name, node.creation)
        self.counters: Counter[str] = Counter()
        self.holds = Holds(node.send, node.whereis, node.config.service_hold_max, self.counters)
        self._seq = itertools.count(1)
        self._running: dict[str, Instance] = {}
        self._by_pid: dict[Pid, Instance] = {}
        self._busy: set[str] = set()  # a start, move or stop is in flight
        self._restarts: dict[str, tuple[float, ...]] = {}
        self._objects: dict[str, Any] = {}  # servers given as objects on this node
        self._caps: dict[str, frozenset[str]] = {}  # what each peer can run (`_can_run`)
        self._ready: dict[str, list[asyncio.Future[Pid]]] = {}  # spawn_service waiting
        self._failures: dict[str, tuple[str, float]] = {}  # why a service was given up
        self._leaving: set[str] = set()
        self._syncing: dict[str, float] = {}  # peers up whose tables have not come yet
        self._last_up = 0.0  # when a member last came up (see `_joining`)
        self._gone: set[str] = set()  # members seen going down (not a mesh still forming)
        self._rejoin: asyncio.TimerHandle | None = None
        self._closing = False  # leaving: hand off, start nothing
        self._closed = False  # no more tasks
        self._dirty: set[str] = set()
        self._all_dirty = False
        self._scheduled = False
        self._placement: HashRing | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        registry = node._need_registry()
        registry.watch(self._on_name)
        registry.add_resolver(self._on_conflict)
        node.on_exit(self._on_exit)
        node.watch_ring(self._on_ring)
        dist = node._dist
        if dist is not None:
            for op, handler in (
                ("svc.create", self._on_create),
                ("svc.stop", self._on_stop),
                ("svc.hold", self._on_hold),
                ("svc.takeover", self._on_takeover),
            ):
                dist.handle(op, handler)
            for op, cast in (
                ("svc.add", self._on_add),
                ("svc.remove", self._on_remove),
                ("svc.table", self._on_table),
                ("svc.failed", self._on_failed),
                ("svc.leaving", self._on_leaving),
                ("svc.release", self._on_release),
                ("svc.caps", self._on_caps),
            ):
                dist.handle_cast(op, cast)
            # Hidden peers (tools) get the table too, to list and call services by name.
            node.subscribe_nodes(self._on_node_event, include_hidden=True)
        self._checker = asyncio.get_running_loop().create_task(self._check_loop())
        self._tasks.add(self._checker)

    # -- the public face (through Node) ---------------------------------------------------

    def services(self) -> list[ServiceInfo]:
        """`Node.services()`: every visible spec with where it runs, sorted by name."""
        rows = []
        for name in self.table.names():
            pid = None if name in self.holds else self.node.whereis(name)
            rows.append(ServiceInfo(name, pid.node if pid is not None else None, pid))
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """`services()` with each spec, for inspection tools: name, node, pid (str or
        None), server, restart, quorum."""
        out = []
        for info in self.services():
            spec = self.table.get(info.name)
            assert spec is not None
            out.append({
                "name": info.name,
                "node": info.node,
                "pid": None if info.pid is None else str(info.pid),
                "server": spec.server,
                "restart": spec.restart,
                "quorum": spec.quorum,
            })  # fmt: skip
        return out

    def instances(self) -> dict[str, Pid]:
        """The instances running on this node, by service name (for tests and tools)."""
        return {name: inst.pid for name, inst in self._running.items()}

    def intercept(self, name: str, message: object) -> bool:
        """Hold `message`, sent by name, if the service `name` is moving or restarting;
        True if held. Raises QueueFull past `service_hold_max` held messages."""
        if name not in self.holds and (
            name not in self.table or self.node.whereis(name) is not None
        ):
            return False
        self.holds.hold(name, message, self._now() + self.config.service_hold)
        return True

    def ready(self, name: str) -> bool:
        """Whether a call by `name` can go now: no service of that name, or one that is
        registered and not moving."""
        return name not in self.table or (
            name not in self.holds and self.node.whereis(name) is not None
        )

    async def wait_ready(self, name: str, timeout: float) -> None:
        """Return once the service `name` is registered and not moving (at once if `name`
        is no service, or is up); CallTimeout after `timeout`."""
        if name not in self.table:
            return
        if name not in self.holds and self.node.whereis(name) is not None:
            return
        await self.holds.wait(name, self._now() + self.config.service_hold, timeout)

    def moving(self, name: str) -> bool:
        return self.holds.moving(name)

    def stats(self) -> dict[str, int]:
        return {
            "services": len(self.table),
            "services_here": len(self._running),
            **{f"service_{k}": v for k, v in sorted(self.counters.items())},
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def leave(self) -> None:
        """Hand every instance here over to its next owner, then close (graceful leave)."""
        if self._closing:
            return
        self._closing = True
        self._checker.cancel()
        node = self.node
        self._placement = None
        if not node.hidden:
            self.members.leave(node.name, node.creation)
            self._broadcast("svc.leaving", node.name)
        inflight = [t for t in self._tasks if t is not self._checker]
        if inflight:
            await asyncio.wait(inflight, timeout=self.config.handoff_timeout)
        owner_of = self._owner_function()
        moves: dict[str, list[str]] = {}
        work = []
        for name in list(self._running):
            if name in self._busy:
                continue
            self._busy.add(name)
            owner = owner_of(name)
            if owner is None:  # nobody else can run it: it stops with us
                work.append(self._spawn(self._stop_instance(name, SHUTDOWN)))
            else:
                moves.setdefault(owner, []).append(name)
        work += [self._spawn(self._move(to, names)) for to, names in moves.items()]
        tasks = [t for t in work if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=3 * self.config.handoff_timeout)
        await self.close()

    async def close(self) -> None:
        """Stop every task of the layer and fail what waits on it (the instances are left
        to the node's shutdown)."""
        self._closing = self._closed = True
        if self._rejoin is not None:
            self._rejoin.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.holds.close()
        for name in list(self._ready):
            for future in self._ready.pop(name):
                if not future.done():
                    future.set_exception(NoProc("the node stopped"))

    # -- placement ---------------------------------------------------------------------------

    def _members_here(self) -> list[str]:
        return [*([] if self.node.hidden else [self.node.name]), *self.node.nodes()]

    def _leader(self, name: str) -> str:
        members = self._members_here()
        if not members:
            raise ConfigError("no node to run services: a hidden node alone runs none")
        return leader_for(name, members)

    def _placement_ring(self) -> HashRing:
        ring = self._placement
        if ring is None:
            ring = self.node.ring
            leaving = {n for n in self._leaving if n in ring}
            if self._closing and self.node.name in ring:
                leaving.add(self.node.name)
            if leaving:
                ring = ring.copy()
                for name in leaving:
                    ring.remove_node(name)
            self._placement = ring
        return ring

    def owner(self, name: str) -> str | None:
        """The node that should run service `name`, as this node sees the cluster."""
        return self._owner_function()(name)

    def _owner_function(self) -> Callable[[str], str | None]:
        """The ring owner of a name among the members that can run its service: the
        first of them walking the ring from the name, which is its owner on a ring
        without the others (so a node that cannot run it changes no other placement)."""
        ring = self._placement_ring()
        size = len(ring)
        table = self.table
        own = frozenset(self._own_caps())

        def can_run(node: str, ref: str) -> bool:
            caps = own if node == self.node.name else self._caps.get(node)
            return caps is not None and (ref in caps or ref.partition(":")[0] in caps)

        def owner_of(name: str) -> str | None:
            if not size:
                return None
            first = ring.key_to_node(name)
            spec = table.get(name)
            if spec is None or can_run(first, spec.server):
                return first
            for node in ring.key_to_nodes(name, size):
                if can_run(node, spec.server):
                    return node
            return None

        return owner_of

    def _can_run(self, node: str, ref: str, *, unknown: bool = False) -> bool:
        """Whether `node` loads the module of `ref` (or was given it as an object); for
        a peer whose capabilities have not arrived yet (they come right after it is up,
        with its table), `unknown`."""
        caps = frozenset(self._own_caps()) if node == self.node.name else self._caps.get(node)
        if caps is None:
            return unknown
        return ref in caps or ref.partition(":")[0] in caps

    def _own_caps(self) -> list[str]:
        return sorted({*self.node._load, *self._objects})

    def _quorum(self) -> bool:
        return has_quorum(len(self._placement_ring()), max(len(self.members.names()), 1))

    def _mark(self, names: Iterable[str] | None = None) -> None:
        """Re-plan `names` (None: every service) soon, once per loop iteration."""
        if names is None:
            self._all_dirty = True
        else:
            self._dirty.update(names)
        if not self._scheduled and not self._closing:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._scheduled = False
        if self._closing:
            return
        if self._all_dirty:
            names: Iterable[str] = {*self.table.names(), *self._running}
        else:
            names = self._dirty
        self._all_dirty, self._dirty = False, set()
        # A name another node is moving is left alone until its mover says it is over.
        todo = [n for n in sorted(names) if n not in self._busy and not self.holds.moving(n)]
        actions = plan(
            self.node.name,
            todo,
            self.table,
            self._owner_function(),
            self.instances(),
            self.node.whereis,
            self._quorum(),
        )
        moves: dict[str, list[str]] = {}
        joining = self._joining()
        for action in actions:
            if joining and type(action) is Start:
                self._dirty.add(action.name)
                continue
            self._busy.add(action.name)
            if type(action) is Start:
                spec = self.table.get(action.name)
                assert spec is not None
                self._spawn(self._start(spec, None))
            elif type(action) is Move:
                moves.setdefault(action.to, []).append(action.name)
            elif type(action) is Stop:
                self._spawn(self._stop_instance(action.name, action.reason))
        for to, batch in moves.items():
            self._spawn(self._move(to, batch))

    def _joining(self) -> bool:
        """Whether fresh starts wait: a peer that just came up has not sent its tables
        yet, or, shortly after a peer came up, a known member that we have not seen go
        down is not connected yet (the mesh is still forming: that member may be
        running what we would start). Both waits end within `_SYNC_WAIT`; a plan is
        then made again. A failover (a member seen going down) never waits."""
        if self._syncing:
            return True
        left = self._last_up + _SYNC_WAIT - self._now()
        if left <= 0:
            return False
        here = set(self._members_here())
        if all(m in here or m in self._gone for m in self.members.names()):
            return False
        if self._rejoin is None:
            self._rejoin = asyncio.get_running_loop().call_later(left, self._rejoined)
        return True

    def _rejoined(self) -> None:
        self._rejoin = None
        self._mark()

    async def _check_loop(self) -> None:
        """The safety net: re-plan everything and expire holds every `service_check`."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(until_next(loop.time(), self.config.service_check))
            now = self._now()
            self.holds.expire(now)
            for peer, since in list(self._syncing.items()):
                if now - since > _SYNC_WAIT:
                    log.warning("%s: no service table from %s yet", self.node.name, peer)
                    del self._syncing[peer]
            for name, (_, at) in list(self._failures.items()):
                if now - at > _FAILURE_MEMORY:
                    del self._failures[name]
            self._mark()

    # -- starting, moving, stopping instances -----------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        """Run `coro` as a task this layer owns (`close` cancels it); none once closed."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(
        self, spec: ServiceSpec, restored: wire.Restored, *, takeover: bool = False
    ) -> Pid | None:
        """Start `spec` here (the caller marked it busy); its pid, or None if it could not
        be (the name is taken, or the spec failed and was removed)."""
        name = spec.name
        try:
            inst = await instances.launch(
                self.node,
                self._resolve(spec.server),
                spec.stamp,
                name,
                spec.args,
                restored,
                takeover=takeover or restored is not None,
                timeout=self.config.call_timeout,
                moving=self.holds.moving,
                started=self._track,
            )
            return inst.pid
        except RemoteError as exc:
            if not self._can_run(self.node.name, spec.server):
                # A peer with an old view of what we load sent it: not ours to judge.
                log.warning("%s: service %r is not runnable here: %s", self.node.name, name, exc)
                return None
            log.error("%s: cannot start service %r: %s", self.node.name, name, exc)
            self._remove_spec(name, failure=f"{self.node.name}: {exc}")
            return None
        except NameTaken as exc:
            log.debug("%s: service %r runs elsewhere: %s", self.node.name, name, exc)
            return None
        except ZmeshError as exc:
            log.warning("%s: service %r did not start: %s", self.node.name, name, exc)
            self._count_restart(spec, str(exc))
            return None
        finally:
            starting = self._running.get(name)
            if starting is not None and starting.expected:  # it never started: it is dead
                self._forget(starting)
            self._busy.discard(name)
            self._mark([name])

    def _track(self, inst: Instance) -> None:
        self._running[inst.name] = inst
        self._by_pid[inst.pid] = inst

    def _forget(self, inst: Instance) -> None:
        if self._running.get(inst.name) is inst:
            del self._running[inst.name]
        self._by_pid.pop(inst.pid, None)

    def _resolve(self, ref: str) -> Any:
        server = self._objects.get(ref)
        if server is None:
            server = resolve(ref, frozenset(self.node._load))
            try:
                instances.check_startable(server)
            except ConfigError as exc:
                raise RemoteError(str(exc)) from None
        return server

    async def _stop_instance(self, name: str, reason: str) -> None:
        """Stop the instance of `name` here through its `terminate(reason)`."""
        inst = self._running.get(name)
        try:
            if inst is not None:
                await instances.stop(self.node, inst, reason, self.config.handoff_timeout)
                self._forget(inst)
        finally:
            self._busy.discard(name)
            self._mark([name])

    def _count_restart(self, spec: ServiceSpec, reason: str) -> None:
        """A restart of `spec` is due: allowed within its intensity, else the service is
        given up cluster-wide (like a supervisor that exceeds its intensity)."""
        intensity = Intensity(spec.max_restarts, spec.max_seconds)
        kept, ok = add_restart(self._restarts.get(spec.name, ()), self._now(), intensity)
        self._restarts[spec.name] = kept
        if not ok:
            log.error(
                "%s: service %r exited more than %d times in %s s (last: %s): stopped",
                self.node.name, spec.name, spec.max_restarts, spec.max_seconds, reason,
            )  # fmt: skip
            self._remove_spec(spec.name, failure=f"restarted too often (last exit: {reason})")

    # -- local events ----------------------------------------------------------------------------

    def _on_exit(self, pid: Pid, reason: object) -> None:
        inst = self._by_pid.get(pid)
        if inst is None or inst.expected:
            return
        self._forget(inst)
        spec = self.table.get(inst.name)
        if spec is None or spec.stamp != inst.stamp:
            return
        if spec.restart == "transient" and reason in (NORMAL, SHUTDOWN):
            log.info("%s: transient service %r exited %s", self.node.name, inst.name, reason)
            self._remove_spec(inst.name)
            return
        self._count_restart(spec, str(reason))
        self._mark([inst.name])

    def _on_ring(self, ring: HashRing) -> None:
        self._placement = None
        self._mark()

    def _on_name(self, name: str, pid: Pid | None) -> None:
        self.holds.registered(name, pid)
        if pid is not None:
            for future in self._ready.pop(name, None) or ():
                if not future.done():
                    future.set_result(pid)
        if name in self.table or name in self._running:
            self._mark([name])

    def _on_conflict(self, name: str, winner: Pid, loser: Pid) -> bool:
        inst = self._by_pid.get(loser)
        if inst is None:
            return False
        log.info("%s: service %r: %s loses to %s", self.node.name, name, loser, winner)
        if name not in self._busy:  # a move in flight stops it anyway
            self._busy.add(name)
            self._spawn(self._stop_instance(name, NAME_CONFLICT))
        return True

    def _on_node_event(self, event: str, name: str) -> None:
        self._placement = None
        dist = self.node._dist
        if event == "up":
            self._leaving.discard(name)
            peer = dist.peer(name) if dist is not None else None
            self._gone.discard(name)
            if name in self.node.nodes() and peer is not None:  # a member, not a tool
                self.members.up(name, peer.creation)
                self._syncing[name] = self._last_up = self._now()
            if dist is not None:
                specs, removed = self.table.snapshot()
                body = [
                    [wire.spec_wire(s) for s in specs],
                    [[n, wire.stamp_wire(t)] for n, t in removed],
                    self._own_caps(),
                    self.members.snapshot(),
                ]
                dist.cast(name, "svc.table", body)
        else:
            if name in self.members.names():  # a tool node is no member: not remembered
                self._gone.add(name)
            self._syncing.pop(name, None)
            self._caps.pop(name, None)
            self._leaving.discard(name)
            self._mark(self.holds.mover_lost(name))
        self._mark()

    # -- messages from peers -------------------------------------------------------------------

    # -- helpers -------------------------------------------------------------------------------

    def _peers(self) -> list[str]:
        return self.node.nodes(include_hidden=True)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _broadcast(self, op: str, body: Any) -> None:
        if self.node._dist is not None:
            self.node._dist.broadcast(op, body)
