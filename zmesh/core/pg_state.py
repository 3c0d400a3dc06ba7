"""Process groups' replicated state (Erlang's pg), pure.

Each node is the authority on its own processes' memberships, so there are no
conflicts: a node's memberships are replaced wholesale from its own snapshot on
reconnect and dropped when it is lost. A pid may join a group more than once; each
`leave` undoes one join.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from zmesh.errors import ConfigError
from zmesh.terms import Pid


def check_group(group: object) -> str:
    if not isinstance(group, str) or not 0 < len(group) <= 255:
        raise ConfigError(f"a group name must be a str of 1-255 characters, got {group!r}")
    return group


@dataclass
class PgState:
    """Every group's members, as join counts per pid."""

    _groups: dict[str, Counter[Pid]] = field(default_factory=dict)

    def join(self, group: str, pid: Pid) -> None:
        self._groups.setdefault(check_group(group), Counter())[pid] += 1

    def leave(self, group: str, pid: Pid) -> None:
        """Undo one join of `pid` (no effect if it is not a member)."""
        members = self._groups.get(group)
        if members is None or members[pid] == 0:
            return
        members[pid] -= 1
        if members[pid] == 0:
            del members[pid]
        if not members:
            del self._groups[group]

    def members(self, group: str) -> list[Pid]:
        """Members in a stable order, a pid once per join."""
        members = self._groups.get(group)
        if not members:
            return []
        return [pid for pid in sorted(members, key=_order) for _ in range(members[pid])]

    def local_members(self, group: str, node: str) -> list[Pid]:
        return [p for p in self.members(group) if p.node == node]

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def remove_pid(self, pid: Pid) -> list[str]:
        """Drop every membership of `pid`; return the groups it left."""
        left = []
        for group in list(self._groups):
            members = self._groups[group]
            if pid in members:
                del members[pid]
                left.append(group)
                if not members:
                    del self._groups[group]
        return left

    def remove_node(self, node: str) -> None:
        for group in list(self._groups):
            members = self._groups[group]
            for pid in [p for p in members if p.node == node]:
                del members[pid]
            if not members:
                del self._groups[group]

    def own_memberships(self, node: str) -> list[tuple[str, Pid]]:
        """`node`'s memberships as (group, pid) pairs, one per join."""
        return [(g, p) for g in self.groups() for p in self.members(g) if p.node == node]

    def replace_node(self, node: str, memberships: Iterable[tuple[str, Pid]]) -> None:
        """Install `node`'s authoritative memberships in place of what we had for it."""
        self.remove_node(node)
        for group, pid in memberships:
            if pid.node == node:
                self.join(group, pid)


def _order(pid: Pid) -> tuple[str, int, int]:
    return (pid.node, pid.creation, pid.id)
