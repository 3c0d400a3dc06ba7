"""The global registry's replicated state, pure: ops and snapshots in, effects out.

A registration instance is an `Entry(name, pid, stamp)`; its `Stamp(time, node, seq)`
is made by the pid's node and identifies that instance. A replica holds, per name, the
set of live candidate entries and tombstones of removed stamps: adds and removes
commute and repeat harmlessly (an op-based CRDT), so replicas that have seen the same
ops agree, whatever the order. The owner of a name is its candidate with the smallest
stamp: the earliest registration wins, the same choice on every replica.

Tombstones are kept `ttl` seconds (`prune`); a remove delayed longer than that behind
its add is outside the guarantee. Time is always a parameter (`now`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import xxhash

from zmesh.errors import ConfigError
from zmesh.terms import Pid


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """Identifies one registration; ordered by (time, node, seq)."""

    time: float
    node: str
    seq: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A registration instance: `name` held by `pid`, made at `stamp`."""

    name: str
    pid: Pid
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class Conflict:
    """`loser` holds `name` too but `winner` owns it; the loser's node must resolve it."""

    name: str
    winner: Entry
    loser: Entry


@dataclass(frozen=True, slots=True)
class OwnerChanged:
    """The owner of `name` changed from `old` to `new` (None: unregistered)."""

    name: str
    old: Pid | None
    new: Pid | None


Effect = Conflict | OwnerChanged


def check_name(name: object) -> str:
    """`name` if it is a valid registered name; ConfigError naming it otherwise."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ConfigError(f"a registered name must be a str of 1-255 characters, got {name!r}")
    return name


def leader_for(name: str, members: Iterable[str]) -> str:
    """The member that arbitrates registrations of `name` (rendezvous hashing: stable
    across processes and minimal movement when members change)."""
    key = name.encode()
    best, best_score = "", -1
    for member in members:
        score = xxhash.xxh3_64_intdigest(key + b"\x00" + member.encode())
        if score > best_score or (score == best_score and member < best):
            best, best_score = member, score
    if not best and best_score < 0:
        raise ConfigError("leader_for needs at least one member")
    return best


@dataclass(slots=True)
class _Reservation:
    pid: Pid
    expires: float


@dataclass
class RegistryState:
    """One replica of the registry table."""

    _candidates: dict[str, dict[Stamp, Entry]] = field(default_factory=dict)
    _owner: dict[str, Entry] = field(default_factory=dict)
    _by_pid: dict[Pid, set[str]] = field(default_factory=dict)
    _tombstones: dict[tuple[str, Stamp], float] = field(default_factory=dict)
    _reported: set[tuple[str, Stamp]] = field(default_factory=set)
    _reservations: dict[str, _Reservation] = field(default_factory=dict)

    # -- reads ---------------------------------------------------------------------------

    def whereis(self, name: str) -> Pid | None:
        entry = self._owner.get(name)
        return entry.pid if entry is not None else None

    def entry(self, name: str) -> Entry | None:
        return self._owner.get(name)

    def names(self) -> list[str]:
        return sorted(self._owner)

    def names_of(self, pid: Pid) -> list[str]:
        """Names `pid` owns (not those where it is only a losing candidate)."""
        return sorted(n for n in self._by_pid.get(pid, ()) if self.whereis(n) == pid)

    def snapshot(self) -> list[Entry]:
        """Every live candidate, conflict losers not yet removed included."""
        return [e for cands in self._candidates.values() for e in cands.values()]

    def own_entries(self, node: str) -> list[Entry]:
        return [e for e in self.snapshot() if e.pid.node == node]

    # -- ops -----------------------------------------------------------------------------

    def add(self, entry: Entry, now: float) -> list[Effect]:
        """Apply a registration (idempotent; ignored if its stamp was removed)."""
        check_name(entry.name)
        if (entry.name, entry.stamp) in self._tombstones:
            return []
        cands = self._candidates.setdefault(entry.name, {})
        if entry.stamp in cands:
            return []
        cands[entry.stamp] = entry
        self._by_pid.setdefault(entry.pid, set()).add(entry.name)
        reservation = self._reservations.get(entry.name)
        if reservation is not None and reservation.pid == entry.pid:
            del self._reservations[entry.name]
        return self._settle(entry.name)

    def remove(self, name: str, stamp: Stamp, now: float) -> list[Effect]:
        """Remove one registration instance; a newer one of the same name is untouched."""
        self._tombstones[(name, stamp)] = now
        cands = self._candidates.get(name)
        if cands is None or stamp not in cands:
            return []
        entry = cands.pop(stamp)
        self._unindex(entry)
        if not cands:
            del self._candidates[name]
        return self._settle(name)

    def remove_pid(self, pid: Pid, now: float) -> list[Entry]:
        """Remove every registration of `pid` (it exited); return them, to broadcast."""
        removed = []
        for name in sorted(self._by_pid.get(pid, ())):
            for entry in list(self._candidates.get(name, {}).values()):
                if entry.pid == pid:
                    removed.append(entry)
                    self.remove(name, entry.stamp, now)
        return removed

    def remove_node(self, node: str, now: float) -> list[Effect]:
        """Forget every registration of processes on `node` (the node was lost).

        No tombstones: if the same incarnation reconnects, its re-announced entries are
        taken back."""
        effects: list[Effect] = []
        for pid in [p for p in self._by_pid if p.node == node]:
            for name in sorted(self._by_pid.get(pid, ())):
                cands = self._candidates.get(name, {})
                for stamp, entry in list(cands.items()):
                    if entry.pid == pid:
                        del cands[stamp]
                        self._unindex(entry)
                if not cands:
                    self._candidates.pop(name, None)
                effects.extend(self._settle(name))
        return effects

    def replace_node(self, node: str, entries: Iterable[Entry], now: float) -> list[Effect]:
        """Install `node`'s own registrations, as it reports them, in place of what this
        replica held for `node`'s processes. A node is the authority on its processes, so
        an entry some other replica relayed for a process that has since exited is gone
        after this, even if the exit's remove never reached us."""
        fresh = {e.stamp: e for e in entries if e.pid.node == node}
        effects: list[Effect] = []
        for entry in [e for e in self.snapshot() if e.pid.node == node]:
            if entry.stamp not in fresh:
                cands = self._candidates.get(entry.name, {})
                cands.pop(entry.stamp, None)
                self._unindex(entry)
                if not cands:
                    self._candidates.pop(entry.name, None)
                effects.extend(self._settle(entry.name))
        for entry in fresh.values():
            effects.extend(self.add(entry, now))
        return effects

    def merge(self, entries: Iterable[Entry], now: float) -> list[Effect]:
        """Take in a peer's snapshot: the union with what this replica holds."""
        effects: list[Effect] = []
        for entry in entries:
            effects.extend(self.add(entry, now))
        return effects

    def prune(self, now: float, ttl: float) -> None:
        """Drop tombstones older than `ttl` and reservations that expired."""
        self._tombstones = {s: t for s, t in self._tombstones.items() if now - t <= ttl}
        self._reservations = {n: r for n, r in self._reservations.items() if r.expires > now}

    # -- the leader's arbitration --------------------------------------------------------

    def reserve(self, name: str, pid: Pid, now: float, hold: float) -> bool:
        """Grant `name` to `pid` if nobody owns it and no other pid holds a live grant."""
        check_name(name)
        owner = self.whereis(name)
        if owner is not None:
            return owner == pid
        current = self._reservations.get(name)
        if current is not None and current.expires > now and current.pid != pid:
            return False
        self._reservations[name] = _Reservation(pid, now + hold)
        return True

    def release(self, name: str, pid: Pid) -> None:
        current = self._reservations.get(name)
        if current is not None and current.pid == pid:
            del self._reservations[name]

    # -- internals -----------------------------------------------------------------------

    def _unindex(self, entry: Entry) -> None:
        names = self._by_pid.get(entry.pid)
        if names is None:
            return
        if not any(e.pid == entry.pid for e in self._candidates.get(entry.name, {}).values()):
            names.discard(entry.name)
        if not names:
            del self._by_pid[entry.pid]

    def _settle(self, name: str) -> list[Effect]:
        """Recompute the owner of `name`; report an owner change and new losers."""
        effects: list[Effect] = []
        cands = self._candidates.get(name)
        old = self._owner.get(name)
        new = cands[min(cands)] if cands else None
        if new is None:
            self._owner.pop(name, None)
        else:
            self._owner[name] = new
        if (old.pid if old else None) != (new.pid if new else None):
            effects.append(OwnerChanged(name, old.pid if old else None, new.pid if new else None))
        if new is not None and cands is not None and len(cands) > 1:
            for stamp, entry in cands.items():
                if stamp != new.stamp and (name, stamp) not in self._reported:
                    self._reported.add((name, stamp))
                    effects.append(Conflict(name, new, entry))
        return effects
