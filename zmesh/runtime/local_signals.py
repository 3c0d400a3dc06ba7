"""Exit signals, links and monitors with OTP's semantics: the part of `Node` that decides
what a process's exit does to the processes linked to it and watching it.

A mixin of `Node` (its process table and distribution are the node's); what crosses
to another node goes through `self._dist`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from zmesh.terms import KILL, KILLED, NOPROC, NORMAL, Exit, Pid, Ref

if TYPE_CHECKING:
    from zmesh.runtime.dist import Distribution
    from zmesh.runtime.gen_server import CallRouter
    from zmesh.runtime.process import Process

log = logging.getLogger("zmesh.node")


class Signals:
    """Links, monitors and exit signals between the processes of a node and beyond."""

    name: str
    system_pid: Pid
    _dist: Distribution | None
    _procs: dict[int, Process]
    _exit_hooks: list[Callable[[Pid, object], None]]
    _calls: CallRouter | None

    if TYPE_CHECKING:

        def _local(self, pid: Pid) -> Process | None: ...
        def make_ref(self) -> Ref: ...

    def exit(self, pid: Pid, reason: object) -> None:
        """Send an exit signal to `pid` from the node itself.

        "normal" is ignored unless the target traps exits; "kill" cannot be trapped
        and takes the target down with reason "killed"; any other reason takes it
        down with that reason, or arrives as `Exit(pid, reason)` if it traps exits.
        """
        self._send_exit(self.system_pid, pid, reason, linked=False)

    def _send_exit(self, sender: Pid, target: Pid, reason: object, *, linked: bool) -> None:
        proc = self._local(target)
        if proc is not None:
            self._exit_signal(proc, sender, reason, linked=linked)
        elif target.node != self.name and self._dist is not None:
            self._dist.send_exit(sender, target, reason, linked)

    def _exit_signal(self, proc: Process, sender: Pid, reason: object, *, linked: bool) -> None:
        """Apply an exit signal from `sender` to the local process `proc`."""
        if proc._exit_reason is not None:
            return
        if linked:
            links = proc.links
            if links is None or sender not in links:
                # As OTP: a link's exit signal is ignored once the link is gone. It fired
                # already ("noconnection" when the session dropped) or was undone; the
                # sender's node may send it on a later session that did not see the drop.
                return
            links.discard(sender)
        if reason == KILL and not linked:
            self._kill(proc, KILLED)
        elif proc.trap_exit:
            proc.deliver(Exit(sender, reason))
        elif reason != NORMAL:
            self._kill(proc, reason)

    def _kill(self, proc: Process, reason: object) -> None:
        self._terminate(proc, reason)
        if proc._task is not None:
            proc._task.cancel()
        else:
            proc._abort_receive(reason)

    def _terminate(self, proc: Process, reason: object) -> None:
        """Mark `proc` dead with `reason` and fire its links, monitors and exit hooks."""
        if proc._exit_reason is not None:
            return
        proc._exit_reason = reason
        pid = proc.pid
        self._procs.pop(pid.id, None)
        proc._mailbox = None
        dist = self._dist
        if proc.monitors:
            for ref, target in proc.monitors.items():
                self._drop_watch(ref, pid, target)
        links = proc.links
        if links:
            for other in sorted(links, key=Pid.order) if len(links) > 1 else links:
                local = self._local(other)
                if local is not None:
                    self._exit_signal(local, pid, reason, linked=True)
                elif dist is not None:
                    dist.send_exit(pid, other, reason, True)
        if proc.watchers:
            for ref, watcher in proc.watchers.items():
                self._deliver_down(watcher, ref, pid, reason)
        if proc.callers:
            router = self._calls
            if router is not None:
                router.server_exited(proc, reason)
        for hook in self._exit_hooks:
            try:
                hook(pid, reason)
            except Exception:
                log.exception("exit hook %r failed for %s", hook, pid)

    def _deliver_down(self, watcher: Pid, ref: Ref, pid: Pid, reason: object) -> None:
        local = self._local(watcher)
        if local is not None:
            local._down(ref, pid, reason)
        elif self._dist is not None:
            self._dist.send_down(watcher, ref, pid, reason)

    def _drop_watch(self, ref: Ref, watcher: Pid, target: Pid) -> None:
        local = self._local(target)
        if local is not None:
            if local.watchers is not None:
                local.watchers.pop(ref, None)
        elif self._dist is not None:
            self._dist.send_demonitor(ref, watcher, target)

    def _link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        if proc.links is None:
            proc.links = set()
        if pid in proc.links:
            return
        other = self._local(pid)
        if other is not None:
            proc.links.add(pid)
            if other.links is None:
                other.links = set()
            other.links.add(proc.pid)
        elif pid.node == self.name or self._dist is None:
            # Linking to a dead process is an immediate exit signal "noproc".
            proc.links.add(pid)
            self._exit_signal(proc, pid, NOPROC, linked=True)
        else:
            proc.links.add(pid)
            self._dist.send_link(proc.pid, pid)

    def _unlink(self, proc: Process, pid: Pid) -> None:
        if proc.links is None or pid not in proc.links:
            return
        proc.links.discard(pid)
        other = self._local(pid)
        if other is not None:
            if other.links is not None:
                other.links.discard(proc.pid)
        elif self._dist is not None:
            self._dist.send_unlink(proc.pid, pid)

    def _monitor(self, proc: Process, pid: Pid, ref: Ref | None = None) -> Ref:
        if ref is None:
            ref = self.make_ref()
        if proc.monitors is None:
            proc.monitors = {}
        proc.monitors[ref] = pid
        target = self._local(pid)
        if target is not None:
            if target.watchers is None:
                target.watchers = {}
            target.watchers[ref] = proc.pid
        elif pid.node == self.name or self._dist is None:
            self._deliver_down(proc.pid, ref, pid, NOPROC)
        else:
            self._dist.send_monitor(ref, proc.pid, pid)
        return ref

    def _demonitor(self, proc: Process, ref: Ref) -> None:
        if proc.monitors is None:
            return
        target = proc.monitors.pop(ref, None)
        if target is not None:
            self._drop_watch(ref, proc.pid, target)
