"""The global registry's replicated state, pure: ops and snapshots in, effects out.

Model: an op-based CRDT. A registration instance is an `Entry(name, pid, stamp)`; the
pid's host node makes its `Stamp(time, node, seq)`, which identifies the instance. A
replica holds, per name, the live candidate entries, plus tombstones of removed
(name, stamp) pairs: a removed instance never comes back, an add of a tombstoned stamp
is ignored. Adds and removes commute and repeat harmlessly, so replicas that applied
the same ops hold the same candidates, whatever the order and duplication.

Ownership: the owner of a name is its candidate with the smallest stamp (the earliest
registration wins), the same choice on every replica holding the same candidates, with
no coordination. Every other candidate is a loser, reported once per replica as a
`Conflict`; the runtime acts on it only on the loser's host (it removes the loser).

Limits of the guarantee:
- Tombstones live `ttl` after their remove was last seen (`prune`): an add delivered
  more than `ttl` after the remove of its stamp may come back to life.
- A stamp names one instance: a second entry with a stamp already held for its name
  is ignored (hosts make stamps unique from their name and a per-host seq).
- Node loss (`remove_node`) leaves no tombstones, so a snapshot still holding a lost
  node's entries brings them back: merge only entries of nodes the runtime sees up.

Nothing here does I/O or reads a clock: `now` is a parameter (one monotonic clock per
replica); only stamps carry wall time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

import xxhash

from zmesh.errors import ConfigError
from zmesh.terms import Pid

MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """Identifies one registration instance; totally ordered by (time, node, seq)."""

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
    """`loser` is a live candidate for `name` that `winner` beats. Emitted on every
    replica, once per (name, loser stamp); only the loser's host node should act."""

    name: str
    winner: Entry
    loser: Entry


@dataclass(frozen=True, slots=True)
class OwnerChanged:
    """The owner of `name` went from `old` to `new` (None: no owner)."""

    name: str
    old: Pid | None
    new: Pid | None


@dataclass(frozen=True, slots=True)
class Stale:
    """A peer's snapshot holds `entry` of this replica's own node that is not live here
    (removed, or made by an earlier incarnation). The replica has tombstoned it; the
    runtime should broadcast its removal so the peers drop it too."""

    entry: Entry


Effect: TypeAlias = Conflict | OwnerChanged | Stale

_Key: TypeAlias = tuple[str, Stamp]


def check_name(name: object) -> str:
    """`name` if it is a valid registered name (a str of 1-255 chars), else ConfigError."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ConfigError(
            f"a registered name must be a str of 1-{MAX_NAME_LENGTH} characters, got {name!r}"
        )
    return name


def check_entry(entry: object) -> Entry:
    """`entry` if it is a well-formed Entry, else ConfigError naming it."""
    if not (
        isinstance(entry, Entry)
        and isinstance(entry.pid, Pid)
        and isinstance(entry.stamp, Stamp)
        # Stamps must compare totally (a NaN time or a non-str node would not): every
        # replica picks the owner by that order.
        and isinstance(entry.stamp.time, float | int)
        and math.isfinite(entry.stamp.time)
        and isinstance(entry.stamp.node, str)
        and isinstance(entry.stamp.seq, int)
    ):
        raise ConfigError(f"not a valid registry entry: {entry!r}")
    check_name(entry.name)
    return entry


def leader_for(name: str, members: Iterable[str]) -> str:
    """The member that arbitrates registrations of `name`: rendezvous hashing, so every
    node with the same member set picks the same one, and a member joining or leaving
    moves only the names it wins or held. Uses xxh3_64 (stable across processes)."""
    prefix = check_name(name).encode() + b"\0"
    leader = max(
        members,
        key=lambda member: (xxhash.xxh3_64_intdigest(prefix + member.encode()), member),
        default=None,
    )
    if leader is None:
        raise ConfigError(f"leader_for({name!r}) needs at least one member")
    return leader


@dataclass(frozen=True, slots=True)
class _Reservation:
    pid: Pid
    expires: float


class RegistryState:
    """One replica of the registry.

    `node` is the replica's own node name, or None for a replica that speaks for no
    node (tests, tools). A node is the authority on its own processes: with `node`
    set, `merge` refuses entries of that node that it does not hold and reports them
    as `Stale`.
    """

    def __init__(self, node: str | None = None) -> None:
        self.node = node
        self._candidates: dict[str, dict[Stamp, Entry]] = {}
        self._owner: dict[str, Entry] = {}  # min-stamp candidate per name: O(1) whereis
        # Dicts used as insertion-ordered sets, so effects come out in a reproducible order.
        self._by_pid: dict[Pid, dict[_Key, Entry]] = {}
        self._by_node: dict[str, dict[Pid, None]] = {}
        # Insertion order follows `now` (a refresh re-inserts), which lets prune stop early.
        self._tombstones: dict[_Key, float] = {}
        self._tombstoned: dict[str, dict[Stamp, None]] = {}  # the same keys, by name
        self._reported: set[_Key] = set()  # live candidates already reported as losers
        # Reported losers since removed: remembered for `ttl` so that an instance taken
        # back after `remove_node` is not reported a second time.
        self._retired: dict[_Key, float] = {}
        self._reservations: dict[str, _Reservation] = {}

    # -- reads -------------------------------------------------------------------------

    def whereis(self, name: str) -> Pid | None:
        """The owner of `name`, or None. O(1)."""
        entry = self._owner.get(check_name(name))
        return None if entry is None else entry.pid

    def entry(self, name: str) -> Entry | None:
        """The owning registration of `name`, or None."""
        return self._owner.get(check_name(name))

    def names(self) -> list[str]:
        """Every name that has an owner, sorted."""
        return sorted(self._owner)

    def names_of(self, pid: Pid) -> list[str]:
        """The names `pid` owns (not those where it is only a losing candidate), sorted."""
        held = self._by_pid.get(pid, {})
        return sorted({name for name, _ in held if self._owner[name].pid == pid})

    def candidates(self, name: str) -> list[Entry]:
        """The live registrations of `name`, earliest first: the owner, then the losers
        (lets a runtime re-check a `Conflict` before acting on it late)."""
        return sorted(self._candidates.get(check_name(name), {}).values(), key=_stamp)

    def snapshot(self) -> list[Entry]:
        """Every live candidate, conflict losers not yet removed included (no order)."""
        return [entry for cands in self._candidates.values() for entry in cands.values()]

    def removed(self, name: str) -> list[Stamp]:
        """The stamps of `name`'s removed instances still remembered (tombstoned), so a
        leader's grant can carry them: the grantee then ignores a late add of one."""
        return list(self._tombstoned.get(check_name(name), ()))

    def own_entries(self, node: str) -> list[Entry]:
        """The live candidates whose pid runs on `node`: what `node` announces."""
        return [
            entry for pid in self._by_node.get(node, {}) for entry in self._by_pid[pid].values()
        ]

    # -- ops ---------------------------------------------------------------------------

    def add(self, entry: Entry, now: float) -> list[Effect]:
        """Apply a registration. Idempotent; ignored if its stamp was removed.
        (`now` is unused: every op takes it, so the runtime treats them alike.)"""
        return self._add(check_entry(entry))

    def remove(self, name: str, stamp: Stamp, now: float) -> list[Effect]:
        """Remove the instance (name, stamp) for good, even if its add has not arrived
        yet; another registration of `name` is untouched."""
        if not isinstance(stamp, Stamp):
            raise ConfigError(f"not a registry stamp: {stamp!r}")
        key = (check_name(name), stamp)
        self._tombstone(key, now)
        entry = self._candidates.get(name, {}).get(stamp)
        return [] if entry is None else self._drop(entry, now)

    def remove_pid(self, pid: Pid, now: float, effects: list[Effect] | None = None) -> list[Entry]:
        """Remove (with tombstones) every registration of `pid`, which exited, and return
        them so its host can broadcast their removals. O(registrations of `pid`).
        The removal's effects are appended to `effects` when it is given."""
        removed = list(self._by_pid.get(pid, {}).values())
        for entry in removed:
            self._tombstone((entry.name, entry.stamp), now)
            found = self._drop(entry, now)
            if effects is not None:
                effects.extend(found)
        return removed

    def remove_node(self, node: str, now: float) -> list[Effect]:
        """Forget every registration of processes on `node`, which was lost, and the
        reservations they held.

        No tombstones: if the same incarnation comes back (the loss was a partition), its
        re-announced entries are taken back. Entries of a dead incarnation can come back
        only through a snapshot that still holds them: `merge` only from nodes seen up.
        """
        self._refuse_own(node, "lose")
        effects: list[Effect] = []
        for pid in list(self._by_node.get(node, {})):
            for entry in list(self._by_pid[pid].values()):
                effects.extend(self._drop(entry, now))
        # Their pending registrations will never arrive: do not let them block the names.
        self._reservations = {
            name: r for name, r in self._reservations.items() if r.pid.node != node
        }
        return effects

    def replace_node(self, node: str, entries: Iterable[Entry], now: float) -> list[Effect]:
        """Install `entries`, `node`'s own table as it reports it, in place of what this
        replica holds for `node`'s processes (the node is their authority: an entry it
        no longer has is dropped, without a tombstone). Every entry must be of `node`.

        Assumes the table is not older than ops from `node` already applied here (FIFO
        per link, as the table is sent on connect)."""
        self._refuse_own(node, "replace")
        table = [check_entry(e) for e in entries]
        for entry in table:
            if entry.pid.node != node:
                raise ConfigError(f"{node!r}'s table holds an entry of another node: {entry!r}")
        keep = {(e.name, e.stamp) for e in table}
        effects: list[Effect] = []
        # Drop first: adding first would report the fresh entries as losers to stale ones.
        for pid in list(self._by_node.get(node, {})):
            for key, entry in list(self._by_pid[pid].items()):
                if key not in keep:
                    effects.extend(self._drop(entry, now))
        for entry in table:
            effects.extend(self._add(entry))
        return self._final_winners(effects)

    def merge(self, entries: Iterable[Entry], now: float) -> list[Effect]:
        """Take in a peer's snapshot: the union with this replica, tombstones respected.

        Entries of this replica's own node that it does not hold are refused and
        reported as `Stale`. The runtime should pass only entries of nodes it sees up."""
        batch = [check_entry(e) for e in entries]  # all or nothing
        effects: list[Effect] = []
        for entry in batch:
            if self.node is not None and entry.pid.node == self.node:
                if entry.stamp not in self._candidates.get(entry.name, {}):
                    self._tombstone((entry.name, entry.stamp), now)
                    effects.append(Stale(entry))
                continue
            effects.extend(self._add(entry))
        return self._final_winners(effects)

    def prune(self, now: float, ttl: float) -> None:
        """Drop tombstones (and memories of reported conflicts) older than `ttl`, and
        reservations that have expired."""
        if not ttl >= 0:
            raise ConfigError(f"prune needs a ttl >= 0, got {ttl!r}")
        horizon = now - ttl
        for name, stamp in _expire(self._tombstones, horizon):
            stamps = self._tombstoned[name]
            del stamps[stamp]
            if not stamps:
                del self._tombstoned[name]
        _expire(self._retired, horizon)
        self._reservations = {n: r for n, r in self._reservations.items() if r.expires > now}

    # -- the leader's arbitration ------------------------------------------------------

    def reserve(self, name: str, pid: Pid, now: float, hold: float) -> bool:
        """On the leader of `name`: grant `name` to `pid` unless another pid owns it or
        holds an unexpired grant. Idempotent for the holder (and for the owner). A grant
        lasts until now + `hold`, or until the matching add arrives, or `release`."""
        check_name(name)
        if not hold >= 0:
            raise ConfigError(f"reserve needs a hold >= 0, got {hold!r}")
        owner = self.whereis(name)
        if owner is not None:
            return owner == pid
        held = self._reservations.get(name)
        expires = now + hold
        if held is not None and held.expires > now:
            if held.pid != pid:
                return False
            expires = max(expires, held.expires)
        self._reservations[name] = _Reservation(pid, expires)
        return True

    def release(self, name: str, pid: Pid) -> None:
        """Withdraw `pid`'s grant of `name` (its registration was abandoned)."""
        held = self._reservations.get(check_name(name))
        if held is not None and held.pid == pid:
            del self._reservations[name]

    # -- internals ---------------------------------------------------------------------

    def _refuse_own(self, node: str, what: str) -> None:
        if self.node is not None and node == self.node:
            raise ConfigError(f"the replica of {node!r} cannot {what} its own node")

    def _tombstone(self, key: _Key, now: float) -> None:
        # Re-insert so the dict stays ordered by time; never shorten a tombstone's life.
        since = self._tombstones.pop(key, now)
        self._tombstones[key] = max(since, now)
        self._tombstoned.setdefault(key[0], {})[key[1]] = None

    def _add(self, entry: Entry) -> list[Effect]:
        name, stamp = entry.name, entry.stamp
        key = (name, stamp)
        held = self._reservations.get(name)
        # The grant is used up even if the remove overtook the add: else, with a long
        # hold, the name would stay blocked on the leader.
        if held is not None and held.pid == entry.pid:
            del self._reservations[name]
        if key in self._tombstones:
            return []
        cands = self._candidates.setdefault(name, {})
        if stamp in cands:
            return []
        cands[stamp] = entry
        self._by_pid.setdefault(entry.pid, {})[key] = entry
        self._by_node.setdefault(entry.pid.node, {})[entry.pid] = None
        if key in self._retired:  # back after remove_node: already reported
            del self._retired[key]
            self._reported.add(key)

        owner = self._owner.get(name)
        if owner is None:
            self._owner[name] = entry
            return [OwnerChanged(name, None, entry.pid)]
        effects: list[Effect] = []
        if stamp < owner.stamp:
            self._owner[name] = entry
            if owner.pid != entry.pid:
                effects.append(OwnerChanged(name, owner.pid, entry.pid))
            # The other candidates lost to the old owner already, so were reported.
            self._report(effects, entry, owner)
        else:
            self._report(effects, owner, entry)
        return effects

    def _final_winners(self, effects: list[Effect]) -> list[Effect]:
        """Name the owner at the end of a batch as each Conflict's winner: an earlier
        entry later in the batch may have superseded the one beaten at the time (a
        loser stays a loser: during adds an owner is only ever replaced by an earlier one)."""
        return [
            Conflict(e.name, self._owner[e.name], e.loser) if isinstance(e, Conflict) else e
            for e in effects
        ]

    def _report(self, effects: list[Effect], winner: Entry, loser: Entry) -> None:
        key = (loser.name, loser.stamp)
        if key not in self._reported:
            self._reported.add(key)
            effects.append(Conflict(loser.name, winner, loser))

    def _drop(self, entry: Entry, now: float) -> list[Effect]:
        """Unindex a held candidate (no tombstone) and settle its name's owner."""
        name, key = entry.name, (entry.name, entry.stamp)
        cands = self._candidates[name]
        del cands[entry.stamp]
        of_pid = self._by_pid[entry.pid]
        del of_pid[key]
        if not of_pid:
            del self._by_pid[entry.pid]
            of_node = self._by_node[entry.pid.node]
            del of_node[entry.pid]
            if not of_node:
                del self._by_node[entry.pid.node]
        if key in self._reported:
            self._reported.discard(key)
            self._retired[key] = now
        if self._owner[name].stamp != entry.stamp:
            return []
        if not cands:
            del self._candidates[name]
            del self._owner[name]
            return [OwnerChanged(name, entry.pid, None)]
        new = cands[min(cands)]
        self._owner[name] = new
        return [] if new.pid == entry.pid else [OwnerChanged(name, entry.pid, new.pid)]


def _stamp(entry: Entry) -> Stamp:
    return entry.stamp


def _expire(since: dict[_Key, float], horizon: float) -> list[_Key]:
    """Drop the items older than `horizon` from a dict kept in time order, and return
    their keys. If `now` ever went backwards the order is only approximate and some
    items live longer: safe."""
    expired = []
    for key, time in since.items():
        if time >= horizon:
            break
        expired.append(key)
    for key in expired:
        del since[key]
    return expired
