"""Process groups' replicated state (Erlang's pg), pure.

Each node is the authority on its own processes' memberships, so there are no
conflicts to resolve: a node's memberships are replaced wholesale by its own snapshot
on (re)connect (`replace_node`) and dropped when it is lost (`remove_node`). A pid may
join a group several times; each `leave` undoes one join.

Group names are str of 1-255 characters (like registered names): they travel in
envelopes and sort, which arbitrary keys would not guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable

from zmesh.errors import ConfigError
from zmesh.terms import Pid

MAX_GROUP_LENGTH = 255


def check_group(group: object) -> str:
    """`group` if it is a valid group name (a str of 1-255 chars), else ConfigError."""
    if not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP_LENGTH:
        raise ConfigError(
            f"a group name must be a str of 1-{MAX_GROUP_LENGTH} characters, got {group!r}"
        )
    return group


def _check_pid(pid: object) -> Pid:
    if not isinstance(pid, Pid):
        raise ConfigError(f"a group member must be a Pid, got {pid!r}")
    return pid


def _order(pid: Pid) -> tuple[str, int, int]:
    return (pid.node, pid.creation, pid.id)


class PgState:
    """Every group's members, as a join count per pid."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[Pid, int]] = {}
        # Indexes so a process exit or a node loss costs only what it touches.
        self._by_pid: dict[Pid, set[str]] = {}
        self._by_node: dict[str, set[Pid]] = {}
        self._members: dict[str, list[Pid]] = {}  # members() cache, dropped on change

    def join(self, group: str, pid: Pid) -> int:
        """Add one join of `pid` to `group`; return its join count there."""
        group, pid = check_group(group), _check_pid(pid)
        counts = self._groups.setdefault(group, {})
        counts[pid] = counts.get(pid, 0) + 1
        self._by_pid.setdefault(pid, set()).add(group)
        self._by_node.setdefault(pid.node, set()).add(pid)
        self._members.pop(group, None)
        return counts[pid]

    def leave(self, group: str, pid: Pid) -> bool:
        """Undo one join of `pid` to `group`; False if it was not a member."""
        counts = self._groups.get(check_group(group))
        if counts is None or pid not in counts:
            return False
        if counts[pid] > 1:
            counts[pid] -= 1
            self._members.pop(group, None)
        else:
            self._drop(group, pid)
        return True

    def count(self, group: str, pid: Pid) -> int:
        """How many times `pid` has joined `group` (0: not a member)."""
        return self._groups.get(check_group(group), {}).get(pid, 0)

    def members(self, group: str) -> list[Pid]:
        """The members of `group`, a pid once per join, in the same order on every node."""
        cached = self._members.get(check_group(group))
        if cached is None:
            counts = self._groups.get(group, {})
            cached = [pid for pid in sorted(counts, key=_order) for _ in range(counts[pid])]
            self._members[group] = cached
        return list(cached)

    def local_members(self, group: str, node: str) -> list[Pid]:
        """The members of `group` that run on `node`."""
        return [pid for pid in self.members(group) if pid.node == node]

    def groups(self) -> list[str]:
        """Every group with at least one member, sorted."""
        return sorted(self._groups)

    def groups_of(self, pid: Pid) -> list[str]:
        """The groups `pid` is a member of, sorted."""
        return sorted(self._by_pid.get(pid, ()))

    def remove_pid(self, pid: Pid) -> dict[str, int]:
        """Drop every membership of `pid` (it exited); return the groups it left, each
        with the number of joins undone. O(groups of `pid`)."""
        left = {group: self._groups[group][pid] for group in self.groups_of(pid)}
        for group in left:
            self._drop(group, pid)
        return left

    def remove_node(self, node: str) -> None:
        """Drop every membership of processes on `node` (it was lost)."""
        for pid in list(self._by_node.get(node, ())):
            self.remove_pid(pid)

    def own_memberships(self, node: str) -> list[tuple[str, Pid]]:
        """`node`'s memberships as (group, pid) pairs, one per join, sorted: the snapshot
        `node` sends a peer."""
        return [
            (group, pid)
            for pid in sorted(self._by_node.get(node, ()), key=_order)
            for group in sorted(self._by_pid[pid])
            for _ in range(self._groups[group][pid])
        ]

    def replace_node(self, node: str, memberships: Iterable[tuple[str, Pid]]) -> None:
        """Install `node`'s authoritative memberships (one pair per join) in place of what
        this replica holds for it. Idempotent. Every pid must run on `node`."""
        table = [(check_group(group), _check_pid(pid)) for group, pid in memberships]
        for _, pid in table:
            if pid.node != node:
                raise ConfigError(f"{node!r}'s memberships hold a pid of another node: {pid}")
        self.remove_node(node)
        for group, pid in table:
            self.join(group, pid)

    def _drop(self, group: str, pid: Pid) -> None:
        counts = self._groups[group]
        del counts[pid]
        if not counts:
            del self._groups[group]
        self._members.pop(group, None)
        of_pid = self._by_pid[pid]
        of_pid.discard(group)
        if not of_pid:
            del self._by_pid[pid]
            of_node = self._by_node[pid.node]
            of_node.discard(pid)
            if not of_node:
                del self._by_node[pid.node]
