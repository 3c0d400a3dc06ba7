"""The global name registry at run time: the pure `RegistryState` replicated by broadcast.

Registering a name takes one round trip to the name's leader (chosen by rendezvous
hashing over the members, the same on every node that shares the membership view),
which grants it to exactly one of several racing claimants. The winner's node then
applies the registration and broadcasts it; every op about a pid is sent by the pid's
own node, so the ops of one process arrive in order everywhere. A node that comes up
gets the full table. After a partition heals the replicas merge and every node picks
the same owner per name (the earliest registration); the loser's node applies the
resolve policy (`NodeConfig.resolve`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from zmesh.core.registry_state import (
    Conflict,
    Effect,
    Entry,
    OwnerChanged,
    RegistryState,
    Stamp,
    leader_for,
)
from zmesh.errors import NodeDown
from zmesh.terms import NAME_CONFLICT, NameConflict, Pid

if TYPE_CHECKING:
    from zmesh.runtime.node import Node

log = logging.getLogger("zmesh.registry")

_HOLD = 5.0  # how long a leader's grant waits for the winner's broadcast

#: `fn(name, new_owner_or_None)`, called after the owner of a name changed here.
NameWatcher = Callable[[str, Pid | None], None]
#: `fn(name, winner, loser) -> bool`: True if it dealt with the losing registration of
#: this node itself (the node's resolve policy is then not applied).
Resolver = Callable[[str, Pid, Pid], bool]


def _wire(entry: Entry) -> list[Any]:
    return [entry.name, entry.pid, *_wire_stamp(entry.stamp)]


def _wire_stamp(stamp: Stamp) -> list[Any]:
    return [stamp.time, stamp.node, stamp.seq]


def _entry(data: Any) -> Entry:
    name, pid, *stamp = data
    if type(pid) is not Pid or type(name) is not str:
        raise TypeError(f"not a registry entry: {data!r}")
    return Entry(name, pid, _stamp(stamp))


def _stamp(data: Any) -> Stamp:
    t, node, seq = data
    if type(node) is not str:
        raise TypeError(f"not a registry stamp: {data!r}")
    return Stamp(float(t), node, int(seq))


class Registry:
    """One node's replica and the protocol that keeps it in step with the others."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.state = RegistryState()
        self._seq = itertools.count(1)
        self._watchers: list[NameWatcher] = []
        #: Operations on this node's own registrations: registered, refused,
        #: unregistered (an exit or a loss included), conflicts (lost at a heal).
        self.counters: Counter[str] = Counter()
        self._resolvers: list[Resolver] = []
        node.on_exit(self._on_exit)
        dist = node._dist
        if dist is not None:
            dist.handle("reg.reserve", self._on_reserve)
            dist.handle("reg.register", self._on_register_request)
            dist.handle_cast("reg.add", self._on_add)
            dist.handle_cast("reg.remove", self._on_remove)
            dist.handle_cast("reg.table", self._on_table)
            # Hidden peers too: they need the table for `whereis`, and their names go
            # when they do.
            dist.subscribe(self._on_node_event, include_hidden=True)

    def watch(self, watcher: NameWatcher) -> None:
        """Call `watcher(name, pid)` whenever the owner of a name changes on this replica."""
        self._watchers.append(watcher)

    def add_resolver(self, resolver: Resolver) -> None:
        """Let `resolver` handle this node's losers of heal-time conflicts first."""
        self._resolvers.append(resolver)

    # -- reads (local replica) ---------------------------------------------------------------

    def whereis(self, name: str) -> Pid | None:
        return self.state.whereis(name)

    def registered(self) -> list[str]:
        return self.state.names()

    # -- writes -----------------------------------------------------------------------------

    async def register(self, name: str, pid: Pid) -> bool:
        node = self.node
        if pid.node != node.name:
            return bool(await self._ask_host(pid, ["register", name, pid]))
        done = await self._register_here(name, pid)
        self.counters["registered" if done else "refused"] += 1
        return done

    async def _register_here(self, name: str, pid: Pid) -> bool:
        node = self.node
        if not node.is_alive(pid):
            return False
        current = self.state.whereis(name)
        if current == pid:
            return True
        if current is not None:
            return False
        if not await self._reserve(name, pid):
            return False
        if not node.is_alive(pid):  # it died while we asked
            return False
        entry = Entry(name, pid, Stamp(node.env.wall_time(), node.name, next(self._seq)))
        self._apply(self.state.add(entry, self._now()))
        self._broadcast("reg.add", _wire(entry))
        return self.state.whereis(name) == pid

    async def _reserve(self, name: str, pid: Pid) -> bool:
        """Ask `name`'s leader for a grant. A grant carries the stamps of the name's
        removed registrations that the leader remembers: an add of one of them may still
        be on its way here from its node (each link is FIFO, the links are not ordered
        with each other), and must not come back as an earlier owner that defeats ours."""
        for _ in range(3):  # the leader may go down between choosing it and asking it
            members = self._members()
            if not members:
                raise NodeDown(
                    f"{self.node.name} is hidden and reaches no visible node to register {name!r}"
                )
            leader = leader_for(name, members)
            if leader == self.node.name:
                return self.state.reserve(name, pid, self._now(), _HOLD)
            dist = self.node._dist
            assert dist is not None
            try:
                reply = await dist.request(leader, "reg.reserve", [name, pid], None)
            except NodeDown:
                await asyncio.sleep(0.01)
                continue
            try:
                granted, removed = reply
                stamps = [_stamp(s) for s in removed]
            except (TypeError, ValueError):
                log.warning("%s: malformed grant for %r from %s", self.node.name, name, leader)
                return False
            now = self._now()
            for stamp in stamps:
                self._apply(self.state.remove(name, stamp, now))
            return granted is True
        return False

    async def unregister(self, name: str) -> None:
        entry = self.state.entry(name)
        if entry is None:
            return
        if entry.pid.node != self.node.name:
            await self._ask_host(entry.pid, ["unregister", name, entry.pid])
            return
        self._remove(entry)

    def _remove(self, entry: Entry) -> None:
        self.counters["unregistered"] += 1
        self._apply(self.state.remove(entry.name, entry.stamp, self._now()))
        self._broadcast("reg.remove", _wire(entry))
        self._prune()

    def _prune(self) -> None:
        """Forget tombstones older than the ttl. Called where tombstones are made: cheap,
        as the state keeps them in time order and stops at the first young one."""
        self.state.prune(self._now(), self.node.config.tombstone_ttl)

    async def _ask_host(self, pid: Pid, body: list[Any]) -> Any:
        dist = self.node._dist
        if dist is None:
            return False
        return await dist.request(pid.node, "reg.register", body, None)

    # -- the protocol --------------------------------------------------------------------------

    def _members(self) -> list[str]:
        """The leader candidates: the visible nodes, never a hidden one (this one included)."""
        node = self.node
        visible = node.nodes()
        return visible if node.hidden else [node.name, *visible]

    def _now(self) -> float:
        return self.node._loop.time()

    def _broadcast(self, op: str, body: Any) -> None:
        if self.node._dist is not None:
            self.node._dist.broadcast(op, body)

    def _on_reserve(self, sender: str, body: Any) -> list[Any]:
        name, pid = body
        if type(pid) is not Pid or pid.node != sender:
            raise TypeError("a node may only reserve names for its own processes")
        if not self.state.reserve(name, pid, self._now(), _HOLD):
            return [False, []]
        return [True, [_wire_stamp(s) for s in self.state.removed(name)]]

    async def _on_register_request(self, sender: str, body: Any) -> bool:
        op, name, pid = body
        if op == "register":
            return await self.register(name, pid)
        await self.unregister(name)
        return True

    def _on_add(self, sender: str, body: Any) -> None:
        entry = _entry(body)
        if entry.pid.node != sender:
            raise TypeError(f"{sender} announced a name for {entry.pid}")
        self._apply(self.state.add(entry, self._now()))

    def _on_remove(self, sender: str, body: Any) -> None:
        entry = _entry(body)
        self._apply(self.state.remove(entry.name, entry.stamp, self._now()))
        self._prune()

    def _on_table(self, sender: str, body: Any) -> None:
        entries = [_entry(e) for e in body]
        if any(e.pid.node != sender for e in entries):
            raise TypeError(f"{sender} sent registrations of other nodes' processes")
        self._apply(self.state.replace_node(sender, entries, self._now()))

    def _on_node_event(self, event: str, name: str) -> None:
        now = self._now()
        if event == "down":
            self._apply(self.state.remove_node(name, now))
            return
        dist = self.node._dist
        if dist is not None:
            # Only our own processes' names: each node speaks for its own, so nobody
            # relays a stale entry; a joiner hears every node as it connects to each.
            own = self.state.own_entries(self.node.name)
            dist.cast(name, "reg.table", [_wire(e) for e in own])
        self._prune()

    def _on_exit(self, pid: Pid, reason: object) -> None:
        if pid.node != self.node.name:
            return
        effects: list[Effect] = []
        removed = self.state.remove_pid(pid, self._now(), effects)
        self.counters["unregistered"] += len(removed)
        for entry in removed:
            self._broadcast("reg.remove", _wire(entry))
        if removed:
            self._prune()
            self._apply(effects)

    def _apply(self, effects: Iterable[object]) -> None:
        """Carry out the state machine's effects: conflicts are resolved on the loser's node."""
        node = self.node
        for effect in effects:
            if type(effect) is OwnerChanged:
                for watcher in self._watchers:
                    try:
                        watcher(effect.name, effect.new)
                    except Exception:
                        log.exception("name watcher %r failed for %r", watcher, effect.name)
                continue
            if type(effect) is not Conflict:
                continue
            loser = effect.loser
            if loser.pid.node != node.name:
                continue
            self.counters["conflicts"] += 1
            self._remove(loser)
            if any(
                self._resolved(r, effect.name, effect.winner.pid, loser.pid)
                for r in self._resolvers
            ):
                continue
            policy = node.config.resolve
            log.info(
                "%s: name %r: %s loses to %s (%s)",
                node.name, effect.name, loser.pid, effect.winner.pid, policy,
            )  # fmt: skip
            if callable(policy):
                try:
                    policy(effect.name, effect.winner.pid, loser.pid)
                except Exception:
                    log.exception("resolve function %r failed for %r", policy, effect.name)
            elif policy == "kill":
                node._send_exit(node.system_pid, loser.pid, NAME_CONFLICT, linked=False)
            elif policy == "notify":
                node.send(loser.pid, NameConflict(effect.name, effect.winner.pid))

    @staticmethod
    def _resolved(resolver: Resolver, name: str, winner: Pid, loser: Pid) -> bool:
        try:
            return resolver(name, winner, loser)
        except Exception:
            log.exception("resolver %r failed for %r", resolver, name)
            return False


def local_names(registry: Registry, pids: Iterable[Pid]) -> dict[Pid, list[str]]:
    """The names each of `pids` holds (for inspection tools)."""
    return {pid: registry.state.names_of(pid) for pid in pids}
