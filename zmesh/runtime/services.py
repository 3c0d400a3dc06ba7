"""Distributed services (Horde/Swarm): one instance per spec, on its ring owner, kept alive.

Every node holds the replicated `ServiceTable`. A spec is created by the name's leader
(the registry's rendezvous choice), which refuses a second, different spec of the same
name, and broadcast to every node; a node that comes up gets the whole table. Each node
then runs `plan` over what changed: the ring owner of a name starts its instance,
registered globally under the name (so `call`/`cast`/`send` by name reach it); an
instance whose owner changed moves there; an instance whose spec is gone stops.

Failover: a lost node leaves the ring, so the next owner finds the name unregistered
and starts the service from its spec (state is not carried: a killed node cannot hand
any over). Handoff: a node that joins, or one that leaves gracefully, makes the ring
move services; the old instance's `handoff()` value goes to the new one's `restore`.
While a service moves, every node holds the messages sent to it by name, in order, and
forwards them once the new instance is registered, so none is lost.

The move protocol, run by the node that has the instance:
1. hold: every connected node starts holding sends by name (and answers); by then every
   message sent by name before the hold is in the old instance's mailbox;
2. handoff: the old instance handles what it has queued, returns `handoff()`, stops;
3. takeover: the new owner starts the instance with `restore(state)` and registers it;
   the registration releases every node's hold. If the target fails, the old node
   starts the instance again itself, with the state, so it is never lost or doubled.

Never two at once: an instance is registered before its `init` runs, and the registry
grants a name to one process only while the cluster is connected; after a partition
heals, the registry's conflict rule picks one and the loser is stopped through its
`terminate` (reason "name_conflict"), after the messages it had queued.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zmesh.core.registry_state import Stamp, check_name, leader_for
from zmesh.core.restart import Intensity, add_restart
from zmesh.core.service_table import (
    RESTARTS,
    Move,
    ServiceSpec,
    ServiceTable,
    Start,
    Stop,
    check_spec,
    check_stamp,
    has_quorum,
    plan,
)
from zmesh.errors import (
    CallTimeout,
    ConfigError,
    NameTaken,
    NoProc,
    QueueFull,
    RemoteError,
    ZmeshError,
)
from zmesh.runtime import gen_server
from zmesh.runtime.loader import reference, resolve
from zmesh.terms import KILL, NAME_CONFLICT, NORMAL, SHUTDOWN, Down, Pid

if TYPE_CHECKING:
    from zmesh.core.ring import HashRing
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.services")

_CLAIM_WINDOW = 2.0  # seconds a new instance retries a name the old one is still giving up
_HOLD_ASK_TIMEOUT = 1.0  # a peer that does not confirm a hold in this time is skipped
_SYNC_WAIT = 1.0  # how long fresh starts wait for a new peer's tables at most


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One row of `Node.services()`: where the service runs (None, None while it is
    being started or moved)."""

    name: str
    node: str | None
    pid: Pid | None


@dataclass(eq=False)
class _Instance:
    """A service instance running on this node."""

    name: str
    pid: Pid
    stamp: Stamp
    is_server: bool
    expected: bool = True  # its exit is ours (starting, moving, stopping): not a crash


@dataclass(eq=False)
class _Hold:
    """Messages sent by name, held on this node until the service is registered again."""

    old: Pid | None  # the instance being replaced; released by any other owner
    by: str | None  # the node moving it (its loss releases the hold); None: a restart
    deadline: float
    messages: deque[Any] = field(default_factory=deque)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


def _spec_wire(spec: ServiceSpec) -> list[Any]:
    s = spec.stamp
    return [
        spec.name, spec.server, spec.args, spec.restart, spec.quorum,
        spec.max_restarts, spec.max_seconds, s.time, s.node, s.seq,
    ]  # fmt: skip


def _spec(data: Any) -> ServiceSpec:
    name, server, args, restart, quorum, max_restarts, max_seconds, t, node, seq = data
    if type(args) is not tuple:
        raise TypeError(f"service args must be a tuple, got {type(args).__name__}")
    stamp = Stamp(float(t), node, seq)
    return check_spec(
        ServiceSpec(name, server, args, restart, bool(quorum), max_restarts, max_seconds, stamp)
    )


def _stamp(data: Any) -> Stamp:
    t, node, seq = data
    return check_stamp(Stamp(float(t), node, seq))


def _stamp_wire(stamp: Stamp) -> list[Any]:
    return [stamp.time, stamp.node, stamp.seq]


class Services:
    """One node's part of the services layer (made and stopped by `Node`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.table = ServiceTable()
        self._seq = itertools.count(1)
        self._running: dict[str, _Instance] = {}
        self._by_pid: dict[Pid, _Instance] = {}
        self._busy: set[str] = set()  # a start, move or stop is in flight
        self._holds: dict[str, _Hold] = {}
        self._restarts: dict[str, tuple[float, ...]] = {}
        self._objects: dict[str, Any] = {}  # servers given as objects on this node
        self._caps: dict[str, frozenset[str]] = {}  # what each peer can run (see _can_run)
        self._ready: dict[str, list[asyncio.Future[Pid]]] = {}  # spawn_service waiting
        self._failures: dict[str, str] = {}  # why a service was given up, by name
        self._known: set[str] = set() if node.hidden else {node.name}
        self._leaving: set[str] = set()
        self._syncing: dict[str, float] = {}  # peers up whose tables have not come yet
        self._closing = False
        self._dirty: set[str] = set()
        self._all_dirty = False
        self._scheduled = False
        self._placement: HashRing | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters = {"held": 0, "hold_dropped": 0, "failovers": 0, "moves": 0}
        registry = node._need_registry()
        registry.watch(self._on_name)
        registry.add_resolver(self._on_conflict)
        node.on_exit(self._on_exit)
        node.watch_ring(self._on_ring)
        dist = node._dist
        if dist is not None:
            dist.handle("svc.create", self._on_create)
            dist.handle("svc.stop", self._on_stop)
            dist.handle("svc.hold", self._on_hold)
            dist.handle("svc.takeover", self._on_takeover)
            dist.handle_cast("svc.add", self._on_add)
            dist.handle_cast("svc.remove", self._on_remove)
            dist.handle_cast("svc.table", self._on_table)
            dist.handle_cast("svc.failed", self._on_failed)
            dist.handle_cast("svc.leaving", self._on_leaving)
            dist.handle_cast("svc.release", self._on_release)
            dist.handle_cast("svc.caps", self._on_caps)
            # Hidden peers (tools) get the table too, to list and call services by name.
            node.subscribe_nodes(self._on_node_event, include_hidden=True)
        self._checker = self._spawn(self._check_loop())

    # -- the public face (through Node) ---------------------------------------------------

    async def spawn(
        self,
        name: str,
        server: Any,
        args: tuple[Any, ...],
        restart: str,
        quorum: bool,
        max_restarts: int,
        max_seconds: float,
        timeout: float,
    ) -> Pid:
        check_name(name)
        if restart not in RESTARTS:
            raise ConfigError(
                f"restart must be one of {RESTARTS}, got {restart!r} "
                "(a service is kept alive: start a one-off process with spawn or start)"
            )
        Intensity(max_restarts, max_seconds)  # refuses bad values with a ConfigError
        if not isinstance(server, str):
            _check_startable(server)
        ref = reference(server)
        if not isinstance(server, str) and ref not in self._objects:
            self._objects[ref] = server
            self._broadcast("svc.caps", self._own_caps())
        node = self.node
        owner = node.whereis(name)
        if owner is not None and name not in self.table:
            raise NameTaken(name, owner)
        if node._dist is not None:
            node._dist.codec.encode(list(args))  # EncodeError here, not on a peer
        members = [*([] if node.hidden else [node.name]), *node.nodes()]
        if not any(self._can_run(m, ref, unknown=True) for m in members):
            module = ref.partition(":")[0]
            raise RemoteError(
                f"no node of the cluster can run {ref!r}: start nodes with --load {module}"
            )
        body = [name, ref, tuple(args), restart, quorum, max_restarts, float(max_seconds)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._failures.pop(name, None)
        waiter = self._await_ready(name)
        try:
            leader = self._leader(name)
            if leader == node.name:
                answer = self._on_create(node.name, body)
            else:
                answer = await node._need_dist().request(leader, "svc.create", body, timeout)
            if answer[0] == "taken":
                raise NameTaken(name, node.whereis(name) or f"another spec ({answer[1]})")
            probe = _is_server_ref(server)
            while True:
                failure = self._failures.get(name)
                if failure is not None:
                    raise RemoteError(f"service {name!r} failed: {failure}")
                pid = node.whereis(name)
                if pid is None or name in self._holds:
                    pid = await asyncio.wait_for(asyncio.shield(waiter), deadline - loop.time())
                    self._forget_waiter(name, waiter)
                    waiter = self._await_ready(name)
                if not probe:
                    return pid
                try:  # registered before its init: wait for the init to be done
                    await node.call(pid, gen_server.PING, timeout=deadline - loop.time())
                    return pid
                except NoProc:  # its init failed: a restart or a failure follows
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} was not running within {timeout} s") from None
        finally:
            self._forget_waiter(name, waiter)

    async def stop_service(self, name: str, timeout: float) -> None:
        check_name(name)
        node = self.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # The leader made the spec, so it knows it even if our replica does not yet.
        leader = self._leader(name)
        if leader == node.name:
            pid = self._on_stop(node.name, name)
        else:
            pid = await node._need_dist().request(leader, "svc.stop", name, timeout)
        try:
            async with node.process() as me:
                if type(pid) is Pid:
                    ref = me.monitor(pid)
                    await me.receive(lambda m: type(m) is Down and m.ref == ref, timeout=timeout)
                while node.whereis(name) is not None and loop.time() < deadline:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} did not stop within {timeout} s") from None

    def services(self) -> list[ServiceInfo]:
        rows = []
        for name in self.table.names():
            pid = None if name in self._holds else self.node.whereis(name)
            rows.append(ServiceInfo(name, pid.node if pid is not None else None, pid))
        return rows

    def moving(self, name: str) -> bool:
        """Whether a node has announced a move of `name` that is not over yet."""
        hold = self._holds.get(name)
        return hold is not None and hold.by is not None

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

    def intercept(self, name: str, message: object) -> bool:
        """Hold `message`, sent by name, if the service `name` is moving or restarting;
        True if held. Raises QueueFull past `service_hold_max` held messages."""
        hold = self._holds.get(name)
        if hold is None:
            if name not in self.table or self.node.whereis(name) is not None:
                return False
            hold = self._holds[name] = _Hold(None, None, self._now() + self.config.service_hold)
        if len(hold.messages) >= self.config.service_hold_max:
            raise QueueFull(f"{len(hold.messages)} messages held for service {name!r}")
        hold.messages.append(message)
        self.counters["held"] += 1
        return True

    async def wait_ready(self, name: str, timeout: float) -> None:
        """Return once the service `name` is registered and not moving (at once if `name`
        is no service, or is up); CallTimeout after `timeout`."""
        if name not in self.table:
            return
        hold = self._holds.get(name)
        if hold is None:
            if self.node.whereis(name) is not None:
                return
            hold = self._holds[name] = _Hold(None, None, self._now() + self.config.service_hold)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        hold.waiters.append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} was not available within {timeout} s") from None

    def stats(self) -> dict[str, int]:
        return {
            "services": len(self.table),
            "services_here": len(self._running),
            **{f"service_{k}": v for k, v in self.counters.items()},
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def leave(self) -> None:
        """Hand every instance here over to its next owner, then stop (graceful leave)."""
        if self._closing:
            return
        self._closing = True
        self._checker.cancel()
        node = self.node
        self._placement = None
        if node._dist is not None:
            node._dist.broadcast("svc.leaving", node.name)
        inflight = [t for t in self._tasks if t is not self._checker]
        if inflight:
            await asyncio.wait(inflight, timeout=self.config.handoff_timeout)
        ring = self._placement_ring()
        moves: dict[str, list[str]] = {}
        stops: list[str] = []
        for name in list(self._running):
            if name in self._busy:
                continue
            if len(ring):
                moves.setdefault(ring.key_to_node(name), []).append(name)
            else:
                stops.append(name)
        work = [self._move(to, names) for to, names in moves.items()]
        work += [self._stop_instance(name, SHUTDOWN) for name in stops]
        if work:
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in work], timeout=3 * self.config.handoff_timeout
            )
        await self.close()

    async def close(self) -> None:
        """Stop the layer's tasks (instances are left to the node's shutdown)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for hold in self._holds.values():
            for waiter in hold.waiters:
                if not waiter.done():
                    waiter.set_exception(NoProc("the node stopped"))
        self._holds.clear()

    # -- placement ---------------------------------------------------------------------------

    def _leader(self, name: str) -> str:
        members = [*([] if self.node.hidden else [self.node.name]), *self.node.nodes()]
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

        def owner_of(name: str) -> str | None:
            if not size:
                return None
            first = ring.key_to_node(name)
            spec = table.get(name)
            if spec is None or self._can_run(first, spec.server):
                return first
            for node in ring.key_to_nodes(name, size):
                if self._can_run(node, spec.server):
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
        members = len(self._placement_ring())
        return has_quorum(members, max(len(self._known - self._leaving), 1))

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
        owner_of = self._owner_function()
        me = self.node.name
        holds = self._holds
        # A name another node is moving is left alone until the move registers it.
        todo = [n for n in names if n not in self._busy and (n not in holds or holds[n].by is None)]
        running = {n: inst.pid for n, inst in self._running.items()}
        actions = plan(
            me,
            todo,
            self.table,
            owner_of,
            running,
            self.node.whereis,
            self._quorum(),
        )
        moves: dict[str, list[str]] = {}
        syncing = bool(self._syncing)
        for action in actions:
            if syncing and type(action) is Start:
                # A peer that just came up may run it: its tables are on their way.
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

    async def _check_loop(self) -> None:
        """The safety net: re-plan everything and expire holds every `service_check`."""
        while True:
            await asyncio.sleep(self.config.service_check)
            now = self._now()
            for name, hold in list(self._holds.items()):
                if hold.deadline < now:
                    self._release(name, self.node.whereis(name), expired=True)
            for peer, since in list(self._syncing.items()):
                if now - since > _SYNC_WAIT:
                    log.warning(
                        "%s: no service table from %s: placing without it", self.node.name, peer
                    )
                    del self._syncing[peer]
            self._mark()

    # -- starting, moving, stopping instances ---------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, spec: ServiceSpec, restored: tuple[Any] | None) -> Pid | None:
        """Start `spec` here (the caller marked it busy); its pid, or None if it could not
        be (the name is taken, or the spec failed and was removed)."""
        name = spec.name
        try:
            return await self._launch(spec, restored)
        except RemoteError as exc:
            if not self._can_run(self.node.name, spec.server):
                # A peer with an old view of what we load sent it: not ours to judge.
                log.warning("%s: service %r is not runnable here: %s", self.node.name, name, exc)
                return None
            log.error("%s: cannot start service %r: %s", self.node.name, name, exc)
            self._remove_spec(name, failure=f"{self.node.name}: {exc}")
            return None
        except ZmeshError as exc:
            if isinstance(exc, NameTaken):
                log.debug("%s: service %r runs elsewhere: %s", self.node.name, name, exc)
            else:
                log.warning("%s: service %r did not start: %s", self.node.name, name, exc)
                self._count_restart(spec, str(exc))
            return None
        finally:
            self._busy.discard(name)
            self._mark([name])

    async def _launch(self, spec: ServiceSpec, restored: tuple[Any] | None) -> Pid:
        node = self.node
        server = self._resolve(spec.server)
        async with node.process() as me:
            pid = node.spawn(_service_main, server, spec.args, spec.name, me.pid, restored)
            inst = _Instance(spec.name, pid, spec.stamp, gen_server.is_server(server))
            self._running[spec.name] = inst
            self._by_pid[pid] = inst
            ref = me.monitor(pid)
            ack = await me.receive(
                lambda m: (
                    (type(m) is tuple and len(m) == 4 and m[0] == "$gen_init" and m[1] == pid)
                    or (type(m) is Down and m.ref == ref)
                ),
                timeout=self.config.call_timeout,
            )
            me.demonitor(ref)
        if type(ack) is Down or not ack[2]:
            self._forget_instance(inst)
            if type(ack) is not Down and isinstance(ack[3], tuple) and ack[3][:1] == ("taken",):
                raise NameTaken(spec.name, ack[3][1])
            reason = ack.reason if type(ack) is Down else ack[3]
            raise ZmeshError(f"service {spec.name!r} failed to start: {reason}")
        if self._running.get(spec.name) is inst:
            inst.expected = False
        return pid

    def _resolve(self, ref: str) -> Any:
        server = self._objects.get(ref)
        if server is None:
            server = resolve(ref, frozenset(self.node._load))
            try:
                _check_startable(server)
            except ConfigError as exc:
                raise RemoteError(str(exc)) from None
        return server

    async def _move(self, to: str, names: list[str]) -> None:
        """Move the instances of `names` (marked busy) to node `to` with their state."""
        node = self.node
        moving = {n: self._running[n] for n in names if n in self._running}
        try:
            body = [[name, inst.pid] for name, inst in moving.items()]
            self._on_hold(node.name, [node.name, body])
            dist = node._dist
            if dist is not None:
                asks = [
                    dist.request(peer, "svc.hold", [node.name, body], _HOLD_ASK_TIMEOUT)
                    for peer in self._peers()
                ]
                await asyncio.gather(*asks, return_exceptions=True)
            states = await asyncio.gather(*(self._take_state(i) for i in moving.values()))
            items = [
                [name, _stamp_wire(inst.stamp), state]
                for (name, inst), state in zip(moving.items(), states, strict=True)
            ]
            taken: set[str] = set()
            if dist is not None and items:
                try:
                    timeout = self.config.handoff_timeout + self.config.call_timeout
                    reply = await dist.request(to, "svc.takeover", items, timeout)
                    taken = {name for name, ok in reply if ok is True}
                except (ZmeshError, TypeError, ValueError) as exc:
                    log.warning("%s: handoff to %s failed: %s", node.name, to, exc)
            self.counters["moves"] += len(taken)
            for name, _, state in items:
                spec = self.table.get(name)
                if name not in taken and spec is not None:
                    # The target is gone or refused: run it here again, state and all;
                    # the next plan moves it on. Exactly one instance either way.
                    self._busy.add(name)
                    await self._start(spec, (state,))
        finally:
            # Whatever happened, the holds this move asked for end here (a hold outlives
            # it only as a wait for the next registration of the name).
            self._on_release(node.name, names)
            if node._dist is not None:
                node._dist.broadcast("svc.release", names)
            for name in names:
                self._busy.discard(name)
            self._mark(names)

    async def _take_state(self, inst: _Instance) -> Any:
        """Stop `inst` after the messages it has queued; its `handoff()` value (GenServer)."""
        node = self.node
        inst.expected = True
        state = None
        async with node.process() as me:
            ref = me.monitor(inst.pid)
            try:
                if inst.is_server:
                    state = await node.call(
                        inst.pid, gen_server.HANDOFF, timeout=self.config.handoff_timeout
                    )
                else:
                    node.exit(inst.pid, SHUTDOWN)
                await me.receive(
                    lambda m: type(m) is Down and m.ref == ref, timeout=self.config.handoff_timeout
                )
            except CallTimeout:
                log.warning("%s: %s did not hand off in time: killed", node.name, inst.pid)
                node.exit(inst.pid, KILL)
                await me.receive(lambda m: type(m) is Down and m.ref == ref, timeout=5.0)
            except (NoProc, TimeoutError):
                pass  # it died meanwhile: no state to carry
        self._forget_instance(inst)
        return state

    async def _stop_instance(self, name: str, reason: str) -> None:
        """Stop the instance of `name` here through its `terminate(reason)`."""
        node = self.node
        inst = self._running.get(name)
        try:
            if inst is None:
                return
            inst.expected = True
            async with node.process() as me:
                ref = me.monitor(inst.pid)
                try:
                    if inst.is_server:
                        request = (gen_server.STOP, reason)
                        await node.call(inst.pid, request, timeout=self.config.handoff_timeout)
                    else:
                        node.exit(inst.pid, reason if reason != NORMAL else SHUTDOWN)
                    await me.receive(
                        lambda m: type(m) is Down and m.ref == ref,
                        timeout=self.config.handoff_timeout,
                    )
                except (CallTimeout, TimeoutError):
                    node.exit(inst.pid, KILL)
                except NoProc:
                    pass
            self._forget_instance(inst)
        finally:
            self._busy.discard(name)
            self._mark([name])

    async def _restore_into(self, inst: _Instance, state: Any) -> bool:
        if not inst.is_server:
            return True
        try:
            request = (gen_server.RESTORE, state)
            await self.node.call(inst.pid, request, timeout=self.config.handoff_timeout)
        except ZmeshError as exc:
            log.warning("%s: restore into %s failed: %s", self.node.name, inst.pid, exc)
            return False
        return True

    def _forget_instance(self, inst: _Instance) -> None:
        if self._running.get(inst.name) is inst:
            del self._running[inst.name]
        self._by_pid.pop(inst.pid, None)

    def _count_restart(self, spec: ServiceSpec, reason: str) -> None:
        """A restart of `spec` is due: allowed within its intensity, else the service is
        given up cluster-wide (like a supervisor that exceeds its intensity)."""
        intensity = Intensity(spec.max_restarts, spec.max_seconds)
        now = asyncio.get_running_loop().time()
        kept, ok = add_restart(self._restarts.get(spec.name, ()), now, intensity)
        self._restarts[spec.name] = kept
        if not ok:
            log.error(
                "%s: service %r exited more than %d times in %s s (last: %s): stopped",
                self.node.name, spec.name, spec.max_restarts, spec.max_seconds, reason,
            )  # fmt: skip
            self._remove_spec(spec.name, failure=f"restarted too often (last exit: {reason})")

    # -- events ------------------------------------------------------------------------------

    def _on_exit(self, pid: Pid, reason: object) -> None:
        inst = self._by_pid.get(pid)
        if inst is None or inst.expected:
            return
        self._forget_instance(inst)
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
        hold = self._holds.get(name)
        # A move's hold ends when its mover says (`svc.release`): an instance that took
        # the name during the move (a fresh start racing it) gets the state first.
        if hold is not None and hold.by is None and pid is not None and pid != hold.old:
            self._release(name, pid)
        if pid is not None:
            waiting = self._ready.pop(name, None)
            for future in waiting or ():
                if not future.done():
                    future.set_result(pid)
        if name in self.table or name in self._running:
            self._mark([name])

    def _on_conflict(self, name: str, winner: Pid, loser: Pid) -> bool:
        inst = self._by_pid.get(loser)
        if inst is None:
            return False
        log.info("%s: service %r: %s loses to %s", self.node.name, name, loser, winner)
        if name not in self._busy:
            self._busy.add(name)
            self._spawn(self._stop_instance(name, NAME_CONFLICT))
        return True

    def _on_node_event(self, event: str, name: str) -> None:
        self._placement = None
        if event == "up":
            self._leaving.discard(name)
            if name in self.node.nodes():  # a member, not a hidden tool node
                self._known.add(name)
                self._syncing[name] = self._now()
            specs, removed = self.table.snapshot()
            dist = self.node._dist
            if dist is not None:
                body = [
                    [_spec_wire(s) for s in specs],
                    [[n, _stamp_wire(t)] for n, t in removed],
                    self._own_caps(),
                ]
                dist.cast(name, "svc.table", body)
        else:
            self._syncing.pop(name, None)
            self._caps.pop(name, None)
            if name in self._leaving:
                self._leaving.discard(name)
                self._known.discard(name)
            for held, hold in list(self._holds.items()):
                if hold.by == name:  # its mover is gone: wait for a restart instead
                    hold.by, hold.old = None, None
                    self._mark([held])
        self._mark()

    # -- messages from peers -------------------------------------------------------------------

    def _on_create(self, sender: str, body: Any) -> list[Any]:
        """On the name's leader: make the spec unless a different one exists."""
        name, server, args, restart, quorum, max_restarts, max_seconds = body
        stamp = Stamp(time.time(), self.node.name, next(self._seq))
        spec = check_spec(
            ServiceSpec(name, server, tuple(args), restart, bool(quorum), max_restarts,
                        float(max_seconds), stamp)
        )  # fmt: skip
        existing = self.table.get(name)
        if existing is not None:
            return ["exists"] if existing.same_as(spec) else ["taken", existing.server]
        holder = self.node.whereis(name)
        if holder is not None:
            return ["taken", f"registered to {holder}"]
        self.table.add(spec)
        self._broadcast("svc.add", _spec_wire(spec))
        self._mark([name])
        return ["created"]

    def _on_stop(self, sender: str, name: Any) -> Pid | None:
        """On the name's leader: remove the spec; the instance it knows of, if any."""
        if self.table.get(check_name(name)) is None:
            return None
        pid = self.node.whereis(name)
        self._remove_spec(name)
        return pid

    def _on_add(self, sender: str, body: Any) -> None:
        if self.table.add(_spec(body)):
            self._mark([body[0]])

    def _on_remove(self, sender: str, body: Any) -> None:
        name, stamp = body
        self._apply_removal(check_name(name), _stamp(stamp))

    def _on_caps(self, sender: str, body: Any) -> None:
        if not isinstance(body, list) or not all(isinstance(c, str) for c in body):
            raise TypeError(f"capabilities must be a list of str, got {body!r}")
        self._caps[sender] = frozenset(body)
        self._mark()

    def _on_table(self, sender: str, body: Any) -> None:
        self._on_caps(sender, body[2])
        specs = [_spec(s) for s in body[0]]
        removed = [(check_name(n), _stamp(s)) for n, s in body[1]]
        changed = self.table.merge(specs, removed)
        for name in changed:
            if name not in self.table:
                self._drop_hold(name)
        if self._syncing.pop(sender, None) is not None:
            self._mark()  # the starts held back for this table
        elif changed:
            self._mark(changed)

    def _on_failed(self, sender: str, body: Any) -> None:
        name, text = body
        # Kept until the name is spawned again: a spawn waiting here reads why.
        self._failures[check_name(name)] = str(text)
        for future in self._ready.pop(check_name(name), None) or ():
            if not future.done():
                future.set_exception(RemoteError(f"service {name!r} failed: {text}"))

    def _on_leaving(self, sender: str, body: Any) -> None:
        if body != sender:
            raise ValueError(f"{sender} announced the leave of {body!r}")
        self._leaving.add(sender)
        self._known.discard(sender)
        self._placement = None
        self._mark()

    def _on_hold(self, sender: str, body: Any) -> bool:
        """Hold sends by name to the listed services until they are registered anew."""
        mover, items = body
        cfg = self.config
        # Outlives the slowest move: a handoff, then the target's start.
        deadline = self._now() + 2 * cfg.handoff_timeout + cfg.call_timeout + cfg.service_hold
        for name, old in items:
            check_name(name)
            hold = self._holds.get(name)
            if hold is None:
                self._holds[name] = _Hold(old, mover, deadline)
            else:
                hold.old, hold.by, hold.deadline = old, mover, deadline
        return True

    def _on_release(self, sender: str, names: Any) -> None:
        """The move by `sender` is over: send what was held to the name's current owner,
        or keep holding until one is registered (the old instance is gone either way)."""
        for name in names:
            hold = self._holds.get(name)
            if hold is None or hold.by != sender:
                continue
            pid = self.node.whereis(name)
            if pid is not None and pid != hold.old:
                self._release(name, pid)
            else:
                hold.by = None
                hold.deadline = self._now() + self.config.service_hold
                self._mark([name])

    async def _on_takeover(self, sender: str, body: Any) -> list[list[Any]]:
        """Start moved instances here with their handed-over state."""

        async def take(name: str, stamp: Any, state: Any) -> list[Any]:
            spec = self.table.get(name)
            if self._closing or spec is None or spec.stamp != _stamp(stamp):
                return [name, False]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _CLAIM_WINDOW + self.config.call_timeout
            while name in self._busy and loop.time() < deadline:
                await asyncio.sleep(0.005)  # a fresh start of ours that raced the move
            inst = self._running.get(name)
            if inst is not None:
                # We started it fresh before the hold reached us (a join racing the
                # tables): it has seen no message by name since, so give it the state.
                return [name, await self._restore_into(inst, state)]
            if name in self._busy:
                return [name, False]
            self._busy.add(name)
            pid = await self._start(spec, (state,))
            return [name, pid is not None]

        return list(await asyncio.gather(*(take(*item) for item in body)))

    # -- helpers -------------------------------------------------------------------------------

    def _peers(self) -> list[str]:
        return self.node.nodes(include_hidden=True)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _broadcast(self, op: str, body: Any) -> None:
        if self.node._dist is not None:
            self.node._dist.broadcast(op, body)

    def _remove_spec(self, name: str, failure: str | None = None) -> None:
        """Remove `name`'s spec cluster-wide (a tombstone over every candidate seen here)."""
        upto = self.table.removal_stamp(name)
        if upto is None:
            return
        if failure is not None:
            self._broadcast("svc.failed", [name, failure])
            self._on_failed(self.node.name, [name, failure])
        self._broadcast("svc.remove", [name, _stamp_wire(upto)])
        self._apply_removal(name, upto)

    def _apply_removal(self, name: str, upto: Stamp) -> None:
        if self.table.remove(name, upto):
            if name not in self.table:
                self._drop_hold(name)
                self._restarts.pop(name, None)
            self._mark([name])

    def _release(self, name: str, pid: Pid | None, *, expired: bool = False) -> None:
        """End the hold of `name`: its messages go to `pid` in order (dropped if None)."""
        hold = self._holds.pop(name, None)
        if hold is None:
            return
        if pid is None:
            self.counters["hold_dropped"] += len(hold.messages)
            if hold.messages:
                log.warning(
                    "%s: %d messages to service %r dropped: not running after %s s",
                    self.node.name, len(hold.messages), name, self.config.service_hold,
                )  # fmt: skip
        else:
            send = self.node.send
            for message in hold.messages:
                send(pid, message)
        for waiter in hold.waiters:
            if not waiter.done():
                if pid is None and expired:
                    waiter.set_exception(NoProc(f"service {name!r} is not running"))
                else:
                    waiter.set_result(None)

    def _drop_hold(self, name: str) -> None:
        self._release(name, None)

    def _await_ready(self, name: str) -> asyncio.Future[Pid]:
        future: asyncio.Future[Pid] = asyncio.get_running_loop().create_future()
        self._ready.setdefault(name, []).append(future)
        return future

    def _forget_waiter(self, name: str, future: asyncio.Future[Pid]) -> None:
        waiting = self._ready.get(name)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._ready[name]
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()  # retrieved: a failure is reported through _failures


def _is_server_ref(server: Any) -> bool:
    """Whether `server` names a GenServer class, as far as this node can tell."""
    if isinstance(server, str):
        try:
            server = resolve(server, None)
        except ZmeshError:
            return False
    return gen_server.is_server(server)


def _check_startable(server: Any) -> None:
    if gen_server.is_server(server) or inspect.iscoroutinefunction(server):
        return
    raise ConfigError(
        f"a service runs a GenServer subclass or an async function fn(proc, *args), got {server!r}"
    )


async def _service_main(
    proc: Any,
    server: Any,
    args: tuple[Any, ...],
    name: str,
    starter: Pid,
    restored: tuple[Any] | None,
) -> None:
    """A service instance: take the name first (so no two ever run `init`), then run."""
    node = proc.node
    if not await _claim(node, name, proc.pid, fresh=restored is None):
        node.send(starter, ("$gen_init", proc.pid, False, ("taken", node.whereis(name))))
        return
    if gen_server.is_server(server):
        await gen_server.serve(proc, server, list(args), starter, restored)
    else:
        node.send(starter, ("$gen_init", proc.pid, True, None))
        await server(proc, *args)


async def _claim(node: Node, name: str, pid: Pid, *, fresh: bool) -> bool:
    """Register `name` for `pid`. A leader that has not yet seen the old instance's
    removal refuses for a moment: retry while no other owner is visible here. A fresh
    start gives up as soon as another node announces it is moving the service here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CLAIM_WINDOW
    pause = 0.005
    services = node._svc
    while True:
        if fresh and services is not None and services.moving(name):
            return False
        if await node.register(name, pid):
            return True
        holder = node.whereis(name)
        if (holder is not None and holder != pid) or loop.time() > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
