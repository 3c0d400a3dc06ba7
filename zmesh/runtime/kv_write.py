"""The coordinator side of the partitioned store's writes: a put numbered with this
node's dot, applied here and sent to the other targets (`start`, or `then` for a put
forwarded here, without a task), and a put forwarded to the key's coordinator when
this node holds no replica of it (`forward`).

The first ``w - 1`` remote targets are asked to acknowledge (this node's own replica
counts); the others apply the write unasked and are asked, sent it again, only if one
of those is lost or slow (`SPARE_AFTER`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmesh.core.kv_placement import Target
from zmesh.core.kv_wire import encode_sibling
from zmesh.core.ring import Key
from zmesh.core.version_vector import TOMBSTONE, Sibling, VersionVector
from zmesh.errors import Unavailable
from zmesh.runtime.kv_gather import Gather

if TYPE_CHECKING:
    from zmesh.runtime.kv import KV

__all__ = ["SPARE_AFTER", "Write", "Writes"]

#: Seconds a read or write waits for the replicas it asked to answer before it asks
#: the other targets too.
SPARE_AFTER = 0.05


class Writes:
    """The writes one store coordinates or forwards from this node."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._me = kv.vnodes.node.name
        self._writer = f"{self._me}#{kv.vnodes.node.creation}"
        self._counts = kv._router.counts
        self._plans: dict[tuple[int, int], Plan] = {}  # by (partition, w)

    async def forward(
        self,
        coordinator: str,
        key: Key,
        value: Any,
        w: int,
        context: VersionVector | None,
        timeout: float,
    ) -> None:
        """Have `coordinator` (a target of `key`) number and replicate the write."""
        result: list[Any] = []

        def on_answer(node: str, answer: Any) -> bool:
            result.append(answer)
            return True

        g = self._kv.fanout.start({coordinator}, on_answer, timeout + 1.0)
        deleted = value is TOMBSTONE
        wire_value = None if deleted else value
        item = ["p", g.op, key, wire_value, deleted, _wire_context(context), w, timeout]
        self._kv.outbox.add(coordinator, item)
        try:
            await g.future
        finally:
            g.end()
        answer = result[0] if result else None
        if type(answer) is int and answer >= w:
            return
        if type(answer) is str:
            raise Unavailable(answer)
        if result:
            self._kv.vnodes.refuse(f"put answer from {coordinator}: {answer!r}")
        raise Unavailable(f"store {self._kv.name!r}: coordinator {coordinator} failed for {key!r}")

    def then(
        self,
        key: Key,
        value: Any,
        w: int,
        context: VersionVector | None,
        timeout: float,
        done: Callable[[int | str], None],
    ) -> None:
        """Coordinate a write forwarded here, without a task: `done(acks)` once `w`
        acknowledged it, else `done(reason)`."""
        write = self.start(key, value, w, context, timeout, None)
        g = write.gather
        if g is None:
            done(write.outcome())
            return

        def finished() -> None:
            assert g is not None
            g.end()
            done(write.outcome())

        g.on_ready = finished

    def start(
        self,
        key: Key,
        value: Any,
        w: int,
        context: VersionVector | None,
        timeout: float,
        part: int | None,
    ) -> Write:
        """Number the write, apply it here and send it to the other targets; the
        returned Write has a `gather` to wait on unless this node's ack was enough."""
        kv = self._kv
        v = kv.vnodes
        if part is None:
            part = v.partition(key)
        targets = v.targets(part)
        if context is None:
            context = v.local_context(key, part)
        # The write's dot: one no write of this node's incarnation has used. The count
        # lives in the router (it outlives a close and re-open) and passes any count of
        # ours the context has seen.
        counts = self._counts
        n = counts.get(kv.name, 0)
        if context:
            seen = context.get(self._writer, 0)
            if seen > n:
                n = seen
            vv = tuple(sorted(context.items()))
        else:
            vv = ()
        n += 1
        counts[kv.name] = n
        sibling = Sibling((self._writer, n), vv, value)
        if value is TOMBSTONE:
            kv.reaper.deleted(key)
        plan = self._plans.get((part, w))
        if plan is None or plan.targets is not targets:
            plan = self._plans[(part, w)] = Plan(targets, self._me, w)
        write = Write(kv, key, w, len(targets))
        for hint_for in plan.local:
            v.apply(key, sibling, hint_for, part)
        write.acks = len(plan.local)
        if not plan.asked and not plan.spare:
            return write
        wire = write.wire = encode_sibling(sibling)
        add = kv.outbox.add
        if not plan.asked:  # acknowledged here: the others apply it, nobody waits
            for node, hint_for in plan.spare.items():
                add(node, ["w", 0, key, wire, hint_for])
            return write
        # The first `w - 1` remote targets acknowledge; the others apply it unasked and
        # are asked (sent it again) only if one of those is lost or slow.
        g = write.gather = kv.fanout.start(set(plan.asked), write.on_answer, timeout)
        op = g.op
        for node, hint_for in plan.asked.items():
            add(node, ["w", op, key, wire, hint_for])
        if plan.spare:
            write.spare = plan.spare
            for node, hint_for in plan.spare.items():
                add(node, ["w", 0, key, wire, hint_for])
            g.keep_spare(list(plan.spare), write.ask, SPARE_AFTER)
        return write


def _wire_context(context: VersionVector | None) -> list[list[Any]] | None:
    return None if context is None else [[k, n] for k, n in context.items()]


class Plan:
    """How a write of one partition with one `w` is spread over its targets (the same
    for every write until the targets change): this node's own replicas (by the
    primary each stands in for), the remote ones asked to acknowledge and the spare
    ones, by node."""

    __slots__ = ("asked", "local", "spare", "targets")

    def __init__(self, targets: list[Target], me: str, w: int) -> None:
        self.targets = targets
        self.local = [t.hint_for for t in targets if t.node == me]
        remote = [t for t in targets if t.node != me]
        need = max(0, w - len(self.local))
        self.asked = {t.node: t.hint_for for t in remote[:need]}
        self.spare = {t.node: t.hint_for for t in remote[need:]}


class Write:
    """One coordinated write: its acknowledgements, and the gather waiting for more."""

    __slots__ = ("acks", "gather", "key", "kv", "spare", "targets", "w", "wire")

    def __init__(self, kv: KV, key: Key, w: int, targets: int) -> None:
        self.kv = kv
        self.key = key
        self.w = w
        self.targets = targets
        self.acks = 0
        self.gather: Gather | None = None
        self.wire: list[Any] | None = None
        self.spare: dict[str, str | None] = {}

    def on_answer(self, node: str, answer: Any) -> bool:
        """A replica's answer: True once `w` acknowledged the write."""
        if answer is True:
            self.acks += 1
        else:
            self.kv.vnodes.refuse(f"write answer from {node}: {answer!r}")
        return self.acks >= self.w

    def ask(self, node: str) -> None:
        """Ask a spare target, which has the write already, to acknowledge it."""
        assert self.gather is not None
        self.kv.outbox.add(node, ["w", self.gather.op, self.key, self.wire, self.spare[node]])

    def outcome(self) -> int | str:
        """The acknowledgement count, or why the write is not acknowledged."""
        if self.acks >= self.w:
            return self.acks
        return (
            f"store {self.kv.name!r}: {self.acks} of {self.targets} replicas acknowledged "
            f"{self.key!r}, w={self.w}"
        )
