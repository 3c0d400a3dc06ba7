"""The spec table's replication: creating and removing specs through the name's leader,
and the `svc.*` casts that keep every node's table, capabilities and members in step
(a mixin of `Services`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from zmesh.core import service_wire as wire
from zmesh.core.registry_state import Stamp, check_name
from zmesh.core.restart import Intensity
from zmesh.core.service_table import RESTARTS
from zmesh.errors import (
    CallTimeout,
    ConfigError,
    NameTaken,
    NoProc,
    NoQuorum,
    RemoteError,
)
from zmesh.runtime import gen_server
from zmesh.runtime import service_instances as instances
from zmesh.runtime.loader import reference
from zmesh.terms import Down, Pid

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from zmesh.core.ring import HashRing
    from zmesh.core.service_table import Members, ServiceTable
    from zmesh.runtime.node import Node
    from zmesh.runtime.service_holds import Holds


class Specs:
    """`spawn_service` / `stop_service` and the spec table's messages."""

    if TYPE_CHECKING:
        node: Node
        table: ServiceTable
        holds: Holds
        members: Members
        _caps: dict[str, frozenset[str]]
        _failures: dict[str, tuple[str, float]]
        _leaving: set[str]
        _objects: dict[str, Any]
        _placement: HashRing | None
        _ready: dict[str, list[asyncio.Future[Pid]]]
        _restarts: dict[str, tuple[float, ...]]
        _seq: Iterator[int]
        _syncing: dict[str, float]

        def _broadcast(self, op: str, body: Any) -> None: ...
        def _can_run(self, node: str, ref: str, *, unknown: bool = False) -> bool: ...
        def _leader(self, name: str) -> str: ...
        def _mark(self, names: Iterable[str] | None = None) -> None: ...
        def _members_here(self) -> list[str]: ...
        def _now(self) -> float: ...
        def _own_caps(self) -> list[str]: ...
        def _placement_ring(self) -> HashRing: ...
        def _quorum(self) -> bool: ...

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
        """`Node.spawn_service`: create the spec through the name's leader, then wait
        until the instance is registered and its `init` is done."""
        check_name(name)
        if restart not in RESTARTS:
            raise ConfigError(
                f"restart must be one of {RESTARTS}, got {restart!r} "
                "(a service is kept alive: start a one-off process with spawn or start)"
            )
        Intensity(max_restarts, max_seconds)  # refuses bad values with a ConfigError
        if not isinstance(quorum, bool):
            raise ConfigError(f"quorum must be True or False, got {quorum!r}")
        if not isinstance(server, str):
            instances.check_startable(server)
        ref = reference(server)
        if not isinstance(server, str) and ref not in self._objects:
            self._objects[ref] = server
            self._broadcast("svc.caps", self._own_caps())
        node = self.node
        if node._dist is not None:
            node._dist.codec.encode(list(args))  # EncodeError here, not on a peer
        if quorum and not self._quorum():
            known = self.members.names()
            raise NoQuorum(
                f"service {name!r} needs a quorum: this node reaches "
                f"{len(self._placement_ring())} of the {len(known)} known members {known}"
            )
        if not any(self._can_run(m, ref, unknown=True) for m in self._members_here()):
            module = ref.partition(":")[0]
            raise RemoteError(
                f"no node of the cluster can run {ref!r}: start nodes with --load {module}"
            )
        body = wire.create_wire(name, ref, tuple(args), restart, quorum, max_restarts, max_seconds)
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
                raise NameTaken(name, node.whereis(name) or answer[1])
            probe = instances.is_server_ref(server)
            while True:
                failure = self._failures.get(name)
                if failure is not None:
                    raise RemoteError(f"service {name!r} failed: {failure[0]}")
                pid = node.whereis(name)
                if pid is None or name in self.holds:
                    pid = await asyncio.wait_for(asyncio.shield(waiter), deadline - loop.time())
                    self._forget_waiter(name, waiter)
                    waiter = self._await_ready(name)
                if not probe:
                    return pid
                try:  # it takes its name before `init`: wait for `init` to be done
                    await node.call(pid, gen_server.PING, timeout=deadline - loop.time())
                    return pid
                except NoProc:  # its init failed: a restart or a failure follows
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} was not running within {timeout} s") from None
        finally:
            self._forget_waiter(name, waiter)

    async def stop_service(self, name: str, timeout: float) -> None:
        """`Node.stop_service`: the name's leader removes the spec (it made it, so it
        knows it even if our replica does not yet); wait for the instance to exit."""
        check_name(name)
        node = self.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
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
                while node.whereis(name) is not None:
                    if loop.time() > deadline:
                        raise TimeoutError
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise CallTimeout(f"service {name!r} did not stop within {timeout} s") from None

    def _on_create(self, sender: str, body: Any) -> list[Any]:
        """On the name's leader: make the spec unless a different one exists."""
        stamp = Stamp(self.node.env.wall_time(), self.node.name, next(self._seq))
        spec = wire.parse_create(body, stamp)
        existing = self.table.get(spec.name)
        if existing is not None:
            return (
                ["exists"] if existing.same_as(spec) else ["taken", f"a spec of {existing.server}"]
            )
        holder = self.node.whereis(spec.name)
        if holder is not None:
            return ["taken", f"registered to {holder}"]
        self.table.add(spec)
        self._broadcast("svc.add", wire.spec_wire(spec))
        self._mark([spec.name])
        return ["created"]

    def _on_stop(self, sender: str, body: Any) -> Pid | None:
        """On the name's leader: remove the spec; the instance it knows of, if any."""
        name = wire.parse_name(body)
        if self.table.get(name) is None:
            return None
        pid = self.node.whereis(name)
        self._remove_spec(name)
        return pid

    def _on_add(self, sender: str, body: Any) -> None:
        spec = wire.parse_spec(body)
        if self.table.add(spec):
            self._mark([spec.name])

    def _on_remove(self, sender: str, body: Any) -> None:
        self._apply_removal(*wire.parse_remove(body))

    def _on_caps(self, sender: str, body: Any) -> None:
        self._caps[sender] = wire.parse_caps(body)
        self._mark()

    def _on_table(self, sender: str, body: Any) -> None:
        specs, removed, caps, members = wire.parse_table(body)
        self.members.merge(*wire.parse_members(members))
        self._caps[sender] = caps
        changed = self.table.merge(specs, removed)
        for name in changed:
            if name not in self.table:
                self.holds.drop(name)
        if self._syncing.pop(sender, None) is not None:
            self._mark()  # the starts held back for this table
        elif changed:
            self._mark(changed)

    def _on_failed(self, sender: str, body: Any) -> None:
        name, text = wire.parse_failed(body)
        # Kept a while (or until the name is spawned again): a waiting spawn reads why.
        self._failures[name] = (text, self._now())
        for future in self._ready.pop(name, None) or ():
            if not future.done():
                future.set_exception(RemoteError(f"service {name!r} failed: {text}"))

    def _on_leaving(self, sender: str, body: Any) -> None:
        if body != sender:
            raise ConfigError(f"{sender} announced the leave of {body!r}")
        peer = self.node._dist.peer(sender) if self.node._dist is not None else None
        if peer is None or peer.hidden:
            return  # a tool node is no member: nothing to forget
        self.members.leave(sender, peer.creation)
        self._leaving.add(sender)
        self._placement = None
        self._mark()

    def _remove_spec(self, name: str, failure: str | None = None) -> None:
        """Remove `name`'s spec cluster-wide (a tombstone over every candidate seen here)."""
        upto = self.table.removal_stamp(name)
        if upto is None:
            return
        if failure is not None:
            self._broadcast("svc.failed", [name, failure])
            self._on_failed(self.node.name, [name, failure])
        self._broadcast("svc.remove", [name, wire.stamp_wire(upto)])
        self._apply_removal(name, upto)

    def _apply_removal(self, name: str, upto: Stamp) -> None:
        if self.table.remove(name, upto):
            if name not in self.table:
                self.holds.drop(name)
                self._restarts.pop(name, None)
            self._mark([name])

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
