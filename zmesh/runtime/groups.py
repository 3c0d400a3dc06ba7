"""Process groups (Erlang's pg) at run time: `node.pg.join(group, pid)` and friends.

Each node is the authority on its own processes' memberships: it broadcasts their
joins and leaves, sends its memberships to every node that comes up, and peers drop a
node's memberships when it goes down. No conflicts are possible, so a healed cluster
agrees as soon as the nodes have reconnected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zmesh.core.pg_state import PgState
from zmesh.errors import ConfigError
from zmesh.terms import Pid

if TYPE_CHECKING:
    from zmesh.runtime.node import Node


class Groups:
    """The node's view of every process group in the cluster."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._state = PgState()
        node.on_exit(self._on_exit)
        dist = node._dist
        if dist is not None:
            dist.handle_cast("pg.join", self._on_join)
            dist.handle_cast("pg.leave", self._on_leave)
            dist.handle_cast("pg.table", self._on_table)
            # Hidden peers too: their processes may join groups, and leave them with them.
            dist.subscribe(self._on_node_event, include_hidden=True)

    def join(self, group: str, pid: Pid) -> None:
        """Add local process `pid` to `group` (a pid may join a group more than once)."""
        self._local(pid)
        if not self._node.is_alive(pid):
            return
        self._state.join(group, pid)
        self._broadcast("pg.join", [group, pid])

    def leave(self, group: str, pid: Pid) -> None:
        """Undo one `join` of `pid` to `group`."""
        self._local(pid)
        if pid in self._state.members(group):
            self._state.leave(group, pid)
            self._broadcast("pg.leave", [group, pid])

    def members(self, group: str) -> list[Pid]:
        """Every member of `group` across the cluster (a pid once per join)."""
        return self._state.members(group)

    def local_members(self, group: str) -> list[Pid]:
        """The members of `group` that run on this node."""
        return self._state.local_members(group, self._node.name)

    def which_groups(self) -> list[str]:
        """Every group with at least one member."""
        return self._state.groups()

    def _local(self, pid: Pid) -> None:
        if type(pid) is not Pid or pid.node != self._node.name:
            raise ConfigError(f"only processes of this node can join or leave groups, got {pid!r}")

    def _broadcast(self, op: str, body: Any) -> None:
        if self._node._dist is not None:
            self._node._dist.broadcast(op, body)

    def _from(self, sender: str, body: Any) -> tuple[str, Pid]:
        group, pid = body
        if type(pid) is not Pid or pid.node != sender or type(group) is not str:
            raise TypeError(f"bad group membership from {sender}: {body!r}")
        return group, pid

    def _on_join(self, sender: str, body: Any) -> None:
        self._state.join(*self._from(sender, body))

    def _on_leave(self, sender: str, body: Any) -> None:
        group, pid = self._from(sender, body)
        if pid in self._state.members(group):
            self._state.leave(group, pid)

    def _on_table(self, sender: str, body: Any) -> None:
        memberships = [self._from(sender, item) for item in body]
        self._state.replace_node(sender, memberships)

    def _on_node_event(self, event: str, name: str) -> None:
        if event == "down":
            self._state.remove_node(name)
            return
        dist = self._node._dist
        if dist is not None:
            own = self._state.own_memberships(self._node.name)
            dist.cast(name, "pg.table", [[group, pid] for group, pid in own])

    def _on_exit(self, pid: Pid, reason: object) -> None:
        if pid.node != self._node.name:
            return
        for group in self._state.groups():
            while pid in self._state.members(group):
                self._state.leave(group, pid)
                self._broadcast("pg.leave", [group, pid])
