"""Links, monitors and exit signals across nodes (LINK, UNLINK, EXIT, MONITOR,
DEMONITOR, DOWN).

The local semantics live in `Node`; this module carries them to the pid's node and
remembers, per peer, every link and monitor that crosses to it, so that losing the
peer fires each with "noconnection" (and drops the watches peers held on our pids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zmesh.core.protocol import Kind, check_type
from zmesh.runtime.membership import Peer
from zmesh.terms import NOCONNECTION, NOPROC, Pid, Ref

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution


@dataclass(eq=False)
class _Links:
    """Cross-node links and monitors touching one peer, so its loss can fire them."""

    links: set[tuple[Pid, Pid]] = field(default_factory=set)  # (local, remote)
    monitors: dict[Ref, tuple[Pid, Pid]] = field(default_factory=dict)  # ours on theirs
    watchers: dict[Ref, Pid] = field(default_factory=dict)  # theirs on our pid


class Signals:
    """Sends and receives the envelopes of links, monitors and exit signals."""

    def __init__(self, dist: Distribution) -> None:
        self._dist = dist
        self._node = dist.node
        self._cross: dict[str, _Links] = {}  # by peer name

    def _cross_for(self, name: str) -> _Links:
        cross = self._cross.get(name)
        if cross is None:
            cross = self._cross[name] = _Links()
        return cross

    def peer_lost(self, name: str) -> None:
        """Fire every link and monitor across the session with `name` ("noconnection")."""
        cross = self._cross.pop(name, None)
        if cross is None:
            return
        node = self._node
        for local, remote in cross.links:
            proc = node._local(local)
            if proc is not None:
                node._exit_signal(proc, remote, NOCONNECTION, linked=True)
        for ref, (watcher, target) in cross.monitors.items():
            node._deliver_down(watcher, ref, target, NOCONNECTION)
        for ref, target in cross.watchers.items():
            proc = node._local(target)
            if proc is not None and proc.watchers is not None:
                proc.watchers.pop(ref, None)

    # -- outbound -------------------------------------------------------------------------------

    def send_link(self, local: Pid, remote: Pid) -> None:
        peer = self._dist.up_peer(remote.node)
        if peer is None or peer.creation != remote.creation:
            reason = NOCONNECTION if peer is None else NOPROC
            proc = self._node._local(local)
            if proc is not None:
                self._node._exit_signal(proc, remote, reason, linked=True)
            return
        self._cross_for(remote.node).links.add((local, remote))
        self._dist.signal(peer, Kind.LINK, local, remote)

    def send_unlink(self, local: Pid, remote: Pid) -> None:
        cross = self._cross.get(remote.node)
        if cross is not None:
            cross.links.discard((local, remote))
        peer = self._dist.up_peer(remote.node, remote.creation)
        if peer is not None:
            self._dist.signal(peer, Kind.UNLINK, local, remote)

    def send_exit(self, sender: Pid, target: Pid, reason: object, linked: bool) -> None:
        if linked:
            cross = self._cross.get(target.node)
            if cross is not None:
                cross.links.discard((sender, target))
        peer = self._dist.up_peer(target.node, target.creation)
        if peer is not None:
            self._dist.emit(peer, Kind.EXIT, sender, target, reason, linked)

    def send_monitor(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        peer = self._dist.up_peer(target.node)
        if peer is None or peer.creation != target.creation:
            reason = NOCONNECTION if peer is None else NOPROC
            self._node._deliver_down(watcher, ref, target, reason)
            return
        self._cross_for(target.node).monitors[ref] = (watcher, target)
        self._dist.signal(peer, Kind.MONITOR, ref, watcher, target)

    def send_demonitor(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        cross = self._cross.get(target.node)
        if cross is not None:
            cross.monitors.pop(ref, None)
        peer = self._dist.up_peer(target.node, target.creation)
        if peer is not None:
            self._dist.signal(peer, Kind.DEMONITOR, ref, watcher, target)

    def send_down(self, watcher: Pid, ref: Ref, target: Pid, reason: object) -> None:
        cross = self._cross.get(watcher.node)
        if cross is not None:
            cross.watchers.pop(ref, None)
        peer = self._dist.up_peer(watcher.node, watcher.creation)
        if peer is not None:
            self._dist.emit(peer, Kind.DOWN, ref, watcher, target, reason)

    # -- inbound --------------------------------------------------------------------------------

    def _from_peer(self, peer: Peer, pid: object) -> Pid:
        if type(pid) is not Pid or pid.node != peer.name:
            raise ValueError(f"{pid!r} is not a pid of {peer.name}")
        return pid

    def _ours(self, pid: object) -> Pid:
        if type(pid) is not Pid or pid.node != self._node.name:
            raise ValueError(f"{pid!r} is not a pid of this node")
        return pid

    def on_link(self, peer: Peer, env: list[Any]) -> None:
        remote, local = self._from_peer(peer, env[1]), self._ours(env[2])
        proc = self._node._local(local)
        if proc is None:
            self._dist.emit(peer, Kind.EXIT, local, remote, NOPROC, True)
            return
        if proc.links is None:
            proc.links = set()
        proc.links.add(remote)
        self._cross_for(peer.name).links.add((local, remote))

    def on_unlink(self, peer: Peer, env: list[Any]) -> None:
        remote, local = self._from_peer(peer, env[1]), self._ours(env[2])
        proc = self._node._local(local)
        if proc is not None and proc.links is not None:
            proc.links.discard(remote)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.links.discard((local, remote))

    def on_exit(self, peer: Peer, env: list[Any]) -> None:
        _, sender, target, reason, linked = env
        sender, target = self._from_peer(peer, sender), self._ours(target)
        if linked:
            cross = self._cross.get(peer.name)
            if cross is not None:
                cross.links.discard((target, sender))
        proc = self._node._local(target)
        if proc is not None:
            self._node._exit_signal(proc, sender, reason, linked=bool(linked))

    def on_monitor(self, peer: Peer, env: list[Any]) -> None:
        _, ref, watcher, target = env
        check_type(ref, Ref)
        watcher, target = self._from_peer(peer, watcher), self._ours(target)
        proc = self._node._local(target)
        if proc is None:
            self._dist.emit(peer, Kind.DOWN, ref, watcher, target, NOPROC)
            return
        if proc.watchers is None:
            proc.watchers = {}
        proc.watchers[ref] = watcher
        self._cross_for(peer.name).watchers[ref] = target

    def on_demonitor(self, peer: Peer, env: list[Any]) -> None:
        _, ref, _watcher, target = env
        proc = self._node._local(self._ours(target))
        if proc is not None and proc.watchers is not None:
            proc.watchers.pop(ref, None)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.watchers.pop(ref, None)

    def on_down(self, peer: Peer, env: list[Any]) -> None:
        _, ref, watcher, target, reason = env
        check_type(ref, Ref)
        watcher, target = self._ours(watcher), self._from_peer(peer, target)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.monitors.pop(ref, None)
        self._node._deliver_down(watcher, ref, target, reason)
