"""Distributed services, pure: the replicated table of service specs and the placement rule.

The table is a state-based CRDT, so replicas that have seen the same specs and removals
agree whatever the order, duplication or delay of what they were sent:
- a spec is identified by its `Stamp` (made by the node that created it); every replica
  keeps every spec it has heard of (`candidates`);
- a removal is a per-name tombstone stamp: it hides every candidate of that name with a
  stamp up to it (a later spawn of the same name survives an earlier stop);
- the visible spec of a name is its earliest-stamped candidate not hidden by the tombstone
  (two sides of a partition that spawned the same name agree on one after the heal).
Merging two replicas is a union of candidates and a max of tombstones: commutative,
associative, idempotent. A stamp names one spec (the creating node makes it unique
from its name and a counter): a second spec under a stamp already held is ignored.
Tombstones are never pruned (one small stamp per stopped name), so a spec held by a
node cut off for any length of time cannot come back after its stop; the price is a
stamp kept per distinct service name ever stopped.

`plan` decides, for one node, what to do about each service given the ring, what runs
here and what the registry says; the runtime carries the actions out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from zmesh.core.registry_state import Stamp, check_name
from zmesh.errors import ConfigError
from zmesh.terms import Pid

Restart = Literal["permanent", "transient"]
RESTARTS: Final = ("permanent", "transient")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """How to run one service: `server` ("module:qualname" of a GenServer class or an
    async function) started with `args`, restarted per `restart` within `max_restarts`
    in `max_seconds`; with `quorum` it runs only on a side holding a majority."""

    name: str
    server: str
    args: tuple[Any, ...]
    restart: Restart
    quorum: bool
    max_restarts: int
    max_seconds: float
    stamp: Stamp

    def same_as(self, other: ServiceSpec) -> bool:
        """Whether `other` asks for the same service (everything but the stamp)."""
        return (self.name, self.server, self.args, self.restart, self.quorum) == (
            other.name, other.server, other.args, other.restart, other.quorum,
        )  # fmt: skip


def check_spec(spec: object) -> ServiceSpec:
    """`spec` if well formed, else ConfigError naming what is wrong (input from peers)."""
    if not isinstance(spec, ServiceSpec):
        raise ConfigError(f"not a service spec: {spec!r}")
    check_name(spec.name)
    if not isinstance(spec.server, str) or ":" not in spec.server:
        raise ConfigError(f"service {spec.name!r}: server must be 'module:qualname'")
    if spec.restart not in RESTARTS:
        raise ConfigError(f"service {spec.name!r}: restart must be one of {RESTARTS}")
    if not isinstance(spec.max_restarts, int) or spec.max_restarts < 0:
        raise ConfigError(f"service {spec.name!r}: max_restarts must be an int >= 0")
    if not isinstance(spec.max_seconds, int | float) or not spec.max_seconds > 0:
        raise ConfigError(f"service {spec.name!r}: max_seconds must be > 0")
    check_stamp(spec.stamp)
    return spec


def check_stamp(stamp: object) -> Stamp:
    """`stamp` if it orders totally (finite time, str node, int seq), else ConfigError."""
    if not (
        isinstance(stamp, Stamp)
        and isinstance(stamp.time, int | float)
        and math.isfinite(stamp.time)
        and isinstance(stamp.node, str)
        and isinstance(stamp.seq, int)
    ):
        raise ConfigError(f"not a valid stamp: {stamp!r}")
    return stamp


class ServiceTable:
    """One replica of the cluster's service specs."""

    def __init__(self) -> None:
        self._candidates: dict[str, dict[Stamp, ServiceSpec]] = {}
        self._removed: dict[str, Stamp] = {}  # per name: every stamp up to this is gone
        self._visible: dict[str, ServiceSpec] = {}

    def __len__(self) -> int:
        return len(self._visible)

    def __contains__(self, name: object) -> bool:
        return name in self._visible

    def get(self, name: str) -> ServiceSpec | None:
        """The visible spec of `name`, or None."""
        return self._visible.get(name)

    def specs(self) -> list[ServiceSpec]:
        """Every visible spec, sorted by name."""
        return [self._visible[n] for n in sorted(self._visible)]

    def names(self) -> list[str]:
        return sorted(self._visible)

    def tombstone(self, name: str) -> Stamp | None:
        return self._removed.get(name)

    def add(self, spec: ServiceSpec) -> bool:
        """Take `spec` in; True if the visible spec of its name changed."""
        check_spec(spec)
        dead = self._removed.get(spec.name)
        if dead is not None and spec.stamp <= dead:
            return False
        held = self._candidates.setdefault(spec.name, {})
        if spec.stamp in held:
            return False
        held[spec.stamp] = spec
        return self._refresh(spec.name)

    def remove(self, name: str, upto: Stamp) -> bool:
        """Hide every candidate of `name` stamped up to `upto`; True if the visible spec
        changed. `removal_stamp` gives the stamp that removes what this replica sees."""
        check_name(name)
        check_stamp(upto)
        dead = self._removed.get(name)
        if dead is not None and upto <= dead:
            return False
        self._removed[name] = upto
        kept = {s: c for s, c in self._candidates.get(name, {}).items() if s > upto}
        if kept:
            self._candidates[name] = kept
        else:
            self._candidates.pop(name, None)
        return self._refresh(name)

    def removal_stamp(self, name: str) -> Stamp | None:
        """The tombstone that hides every candidate of `name` this replica holds (None if
        it holds none)."""
        held = self._candidates.get(name)
        return max(held) if held else None

    def snapshot(self) -> tuple[list[ServiceSpec], list[tuple[str, Stamp]]]:
        """Everything a peer needs to converge with this replica: candidates and tombstones."""
        specs = [spec for held in self._candidates.values() for spec in held.values()]
        return specs, sorted(self._removed.items())

    def merge(
        self, specs: Iterable[ServiceSpec], removed: Iterable[tuple[str, Stamp]]
    ) -> list[str]:
        """Take a peer's snapshot in; return the names whose visible spec changed."""
        changed: set[str] = set()
        for name, upto in removed:
            if self.remove(name, upto):
                changed.add(name)
        for spec in specs:
            if self.add(spec):
                changed.add(spec.name)
        return sorted(changed)

    def _refresh(self, name: str) -> bool:
        held = self._candidates.get(name)
        best = held[min(held)] if held else None
        if best is None:
            return self._visible.pop(name, None) is not None
        if self._visible.get(name) is best:
            return False
        self._visible[name] = best
        return True


# -- placement ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start `name` here: this node owns it and nobody runs it."""

    name: str


@dataclass(frozen=True, slots=True)
class Move:
    """Hand the instance running here over to node `to`, which owns it now."""

    name: str
    to: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the instance running here (its spec is gone, it lost its name, or this side
    of a partition has no quorum); `reason` is its exit reason."""

    name: str
    reason: str


Action: TypeAlias = Start | Move | Stop


def has_quorum(reachable: int, known: int) -> bool:
    """A strict majority of the `known` members can be reached (this node counted)."""
    return reachable * 2 > known


class Members:
    """Who the cluster's members are, for quorum: every node seen up (in the latest
    incarnation seen), less those that left gracefully in that incarnation. A killed or
    cut-off node stays a member: from inside, a partition and a crash look alike.

    A state-based CRDT (max per name in both maps), replicated with the service table,
    so a node that restarts during a partition still counts the whole cluster.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._left: dict[str, int] = {}

    def up(self, name: str, creation: int) -> None:
        if creation > self._seen.get(name, -1):
            self._seen[name] = creation

    def leave(self, name: str, creation: int) -> None:
        self.up(name, creation)
        if creation > self._left.get(name, -1):
            self._left[name] = creation

    def merge(self, seen: Mapping[str, int], left: Mapping[str, int]) -> None:
        for name, creation in seen.items():
            self.up(name, creation)
        for name, creation in left.items():
            self.leave(name, creation)

    def names(self) -> list[str]:
        """The members, sorted: seen up, and not left since."""
        return sorted(n for n, c in self._seen.items() if c > self._left.get(n, -1))

    def snapshot(self) -> list[dict[str, int]]:
        return [dict(self._seen), dict(self._left)]


def plan(
    me: str,
    names: Iterable[str],
    table: ServiceTable,
    owner_of: Callable[[str], str | None],
    running: Mapping[str, Pid],
    registered: Callable[[str], Pid | None],
    quorum: bool,
) -> list[Action]:
    """What node `me` must do about each service in `names`.

    `owner_of(name)` is the ring owner among the members this node sees (None: none);
    `running` the instances on this node; `registered(name)` the registry's view;
    `quorum` whether this node's side holds a majority. The rules:
    - an instance here whose spec is gone, or whose name the registry gives to another
      pid, stops; one whose spec needs a quorum this side lacks stops;
    - an instance here that another node owns moves there;
    - the owner starts a service that nobody has registered.
    Names busy with a start, move or stop in flight are for the caller to leave out.
    """
    actions: list[Action] = []
    for name in names:
        spec = table.get(name)
        pid = running.get(name)
        if pid is not None:
            if spec is None:
                actions.append(Stop(name, "shutdown"))
            elif registered(name) != pid:
                actions.append(Stop(name, "name_conflict"))
            elif spec.quorum and not quorum:
                actions.append(Stop(name, "shutdown"))
            else:
                owner = owner_of(name)
                if owner is not None and owner != me:
                    actions.append(Move(name, owner))
        elif (
            spec is not None
            and (quorum or not spec.quorum)
            and owner_of(name) == me
            and registered(name) is None
        ):
            actions.append(Start(name))
    return actions
