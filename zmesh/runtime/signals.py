"""Links, monitors and exit signals across nodes (LINK, UNLINK, EXIT, MONITOR,
DEMONITOR, DOWN), and GenServer calls in one round trip (CALL, CALL_REPLY).

The local semantics live in `Node`; this module carries them to the pid's node and
remembers, per peer, every link and monitor that crosses to it, so that losing the
peer fires each with "noconnection" (and drops the watches peers held on our pids).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from zmesh.core.protocol import Kind, call_envelope, check_type, reply_envelope, send_envelope
from zmesh.errors import DecodeError
from zmesh.runtime.gen_server import CALL, new_ref
from zmesh.runtime.membership import Peer
from zmesh.terms import NOCONNECTION, NOPROC, Pid, Ref, crash_reason, new_pid

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.process import Process

# Plain ints: the codec packs an IntEnum member through its slow `default` hook.
_PID_CACHE: Final = 1024  # callers' pids remembered per peer; cleared whole when full


@dataclass(eq=False)
class _Links:
    """Cross-node links and monitors touching one peer, so its loss can fire them."""

    links: set[tuple[Pid, Pid]] = field(default_factory=set)  # (local, remote)
    monitors: dict[Ref, tuple[Pid, Pid]] = field(default_factory=dict)  # ours on theirs
    watchers: dict[Ref, Pid] = field(default_factory=dict)  # theirs on our pid
    # The implicit monitors of their calls to our servers (CALL), by call ref id: the
    # server and the ref.
    calls: dict[int, tuple[Process, Ref]] = field(default_factory=dict)
    pids: dict[int, Pid] = field(default_factory=dict)  # their callers' pids, by id


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

    def handlers(self) -> dict[int, Callable[[Peer, list[Any]], None]]:
        """This part's inbound envelope handlers, by kind."""
        return {
            Kind.LINK: self.on_link,
            Kind.UNLINK: self.on_unlink,
            Kind.EXIT: self.on_exit,
            Kind.MONITOR: self.on_monitor,
            Kind.DEMONITOR: self.on_demonitor,
            Kind.DOWN: self.on_down,
            Kind.CALL: self.on_call,
            Kind.CALL_REPLY: self.on_call_reply,
        }

    def peer_lost(self, name: str) -> None:
        """Fire every link, monitor and call across the session with `name` ("noconnection")."""
        node = self._node
        if node._calls is not None:
            node._calls.node_lost(name)
        cross = self._cross.pop(name, None)
        if cross is None:
            return
        for local, remote in sorted(cross.links, key=_pair_order):
            proc = node._local(local)
            if proc is not None:
                node._exit_signal(proc, remote, NOCONNECTION, linked=True)
        for ref, (watcher, target) in cross.monitors.items():
            node._deliver_down(watcher, ref, target, NOCONNECTION)
        for ref, target in cross.watchers.items():
            proc = node._local(target)
            if proc is not None and proc.watchers is not None:
                proc.watchers.pop(ref, None)
        for server, ref in cross.calls.values():
            if server.watchers is not None:
                server.watchers.pop(ref, None)

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
            cross.calls.pop(ref.id, None)
        peer = self._dist.up_peer(watcher.node, watcher.creation)
        if peer is not None:
            self._dist.emit(peer, Kind.DOWN, ref, watcher, target, reason)

    # -- calls ----------------------------------------------------------------------------------

    def send_call(self, caller: Pid, ref: Ref, target: Pid, request: object) -> str | None:
        """Send `request` to the GenServer `target` as a call from `caller` tagged `ref`
        (both of this node), with the implicit monitor that fails it if `target` goes
        first (a DOWN; losing the peer fails it through `CallRouter.node_lost`). None once
        sent, else why it cannot be ("noconnection": no session; "noproc": another
        incarnation). Raises EncodeError for a request that cannot be sent."""
        dist = self._dist
        peer = dist.sessions.get(target.node)
        if peer is None or not peer.up or dist._left:
            return NOCONNECTION
        if peer.creation != target.creation:
            return NOPROC
        payload = dist.codec.encode(request)
        peer.link.enqueue(
            call_envelope(target.id, target.creation, caller.id, ref.id, payload), awaits="reply"
        )
        peer.messages_out += 1
        return None

    def call_done(self, ref: Ref, caller: Pid, target: Pid, via: str | None) -> None:
        """The call `ref` to `target` ended (answered, timed out or abandoned). A reply from
        `target`'s own node (`via`) ended its implicit monitor there; in every other case
        one DEMONITOR ends it."""
        if via != target.node:
            peer = self._dist.up_peer(target.node, target.creation)
            if peer is not None:
                self._dist.signal(peer, Kind.DEMONITOR, ref, caller, target)

    def send_reply(self, caller: Pid, ref: Ref, value: object) -> None:
        """Answer the call `ref` of the remote `caller` with `value` (one CALL_REPLY),
        ending the implicit monitor of that call here."""
        dist = self._dist
        name = caller.node
        cross = self._cross.get(name)
        if cross is not None and cross.calls and ref.node == name:
            held = cross.calls.pop(ref.id, None)
            if held is not None and held[0].watchers is not None:
                held[0].watchers.pop(ref, None)
        peer = dist.sessions.get(name)
        if peer is None or not peer.up or peer.creation != caller.creation or dist._left:
            dist.counters["dropped_sends"] += 1
            return
        if ref.node == name and ref.creation == caller.creation:
            data = reply_envelope(caller.id, caller.creation, ref.id, dist.codec.encode(value))
        else:  # a tag the caller's node did not make (the call protocol used by hand)
            payload = dist.codec.encode((ref, value))
            data = send_envelope(caller.id, caller.creation, payload)
        peer.link.enqueue(data, awaits="nothing")
        peer.messages_out += 1

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
            if type(ref) is Ref:
                cross.calls.pop(ref.id, None)

    def on_down(self, peer: Peer, env: list[Any]) -> None:
        _, ref, watcher, target, reason = env
        check_type(ref, Ref)
        watcher, target = self._ours(watcher), self._from_peer(peer, target)
        cross = self._cross.get(peer.name)
        if cross is not None:
            cross.monitors.pop(ref, None)
        self._node._deliver_down(watcher, ref, target, reason)

    def on_call(self, peer: Peer, env: list[Any]) -> None:
        _, pid_id, creation, caller_id, ref_id, payload = env
        if type(caller_id) is not int or type(ref_id) is not int:
            raise TypeError(f"a call needs a caller id and a ref id: {caller_id!r}, {ref_id!r}")
        peer.messages_in += 1
        cross = self._cross_for(peer.name)
        caller = cross.pids.get(caller_id)
        if caller is None:
            if len(cross.pids) >= _PID_CACHE:
                cross.pids.clear()
            caller = cross.pids[caller_id] = new_pid(peer.name, caller_id, peer.creation)
        ref = new_ref(peer.name, ref_id, peer.creation)
        node = self._node
        proc = node._procs.get(pid_id) if creation == node.creation else None
        if proc is None:
            if type(pid_id) is not int or type(creation) is not int:
                raise TypeError(f"not a process id: {pid_id!r}, {creation!r}")
            target = new_pid(node.name, pid_id, creation)
            self._dist.emit(peer, Kind.DOWN, ref, caller, target, NOPROC)
            return
        try:
            request = self._dist.codec.decode(payload)
        except DecodeError as exc:
            # Counted, and the call fails at once with the reason rather than timing out.
            self._dist.refuse("bad_payloads", f"call from {peer.name}: {exc}")
            self._dist.emit(peer, Kind.DOWN, ref, caller, proc.pid, crash_reason(exc))
            return
        if proc.watchers is None:
            proc.watchers = {}
        proc.watchers[ref] = caller
        cross.calls[ref_id] = (proc, ref)
        proc.deliver((CALL, (caller, ref), request))

    def on_call_reply(self, peer: Peer, env: list[Any]) -> None:
        _, pid_id, creation, ref_id, payload = env
        if type(ref_id) is not int:
            check_type(ref_id, int)  # raises
        peer.messages_in += 1
        node = self._node
        if creation != node.creation:
            return
        proc = node._procs.get(pid_id)
        if proc is None:
            return
        try:
            value = self._dist.codec.decode(payload)
        except DecodeError as exc:
            self._dist.refuse("bad_payloads", f"call reply from {peer.name}: {exc}")
            if proc is node._calls:
                node._calls.fail(ref_id, exc, peer.name)
            return
        if proc is node._calls:
            node._calls.answer(ref_id, value, peer.name)
        else:
            proc.deliver((Ref(node.name, ref_id, creation), value))


def _pair_order(pair: tuple[Pid, Pid]) -> tuple[tuple[str, int, int], tuple[str, int, int]]:
    return pair[0].order(), pair[1].order()
