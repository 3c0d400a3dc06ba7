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
        self._writer = f"{kv.vnodes.node.name}#{kv.vnodes.node.creation}"

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

        def finished(_: object) -> None:
            assert g is not None
            g.end()
            done(write.outcome())

        g.future.add_done_callback(finished)

    def start(
        self,
        key: Key,
        value: Any,
        w: int,
        context: VersionVector | None,
        timeout: float,
        part: int | None,
    ) -> Write:
        v = self._kv.vnodes
        if part is None:
            part = v.partition(key)
        targets = v.targets(part)
        if context is None:
            context = v.local_context(key, part)
        vv = tuple(sorted(context.items())) if context else ()
        sibling = Sibling(self._next_dot(context), vv, value)
        if value is TOMBSTONE:
            self._kv.reaper.deleted(key)
        me = self._kv.vnodes.node.name
        write = Write(self._kv.name, key, w, len(targets))
        remote = []
        for target in targets:
            if target.node == me:
                v.apply(key, sibling, target.hint_for, part)
                write.acks += 1
            else:
                remote.append(target)
        wire = encode_sibling(sibling)
        need = w - write.acks
        if need <= 0:  # acknowledged here: the others apply it, nobody waits
            for target in remote:
                self._kv.outbox.add(target.node, ["w", 0, key, wire, target.hint_for])
            return write

        def on_answer(node: str, answer: Any) -> bool:
            if answer is True:
                write.acks += 1
            else:
                v.refuse(f"write answer from {node}: {answer!r}")
            return write.acks >= w

        # The first `need` remote targets acknowledge; the others apply it unasked and
        # are asked (sent it again) only if one of those is lost or slow.
        asked, spare = remote[:need], remote[need:]
        g = write.gather = self._kv.fanout.start({t.node for t in asked}, on_answer, timeout)
        for target in asked:
            self._kv.outbox.add(target.node, ["w", g.op, key, wire, target.hint_for])
        if spare:
            hints = {t.node: t.hint_for for t in spare}
            for node, hint_for in hints.items():
                self._kv.outbox.add(node, ["w", 0, key, wire, hint_for])

            def ask(node: str) -> None:
                self._kv.outbox.add(node, ["w", g.op, key, wire, hints[node]])

            g.keep_spare(list(hints), ask, SPARE_AFTER)
        return write

    def _next_dot(self, context: VersionVector) -> tuple[str, int]:
        """A dot no write of this node's incarnation has used: the count lives in the
        router (it outlives a close and re-open) and passes any count of ours the
        context has seen."""
        counts = self._kv._router.counts
        n = counts.get(self._kv.name, 0)
        if context:
            seen = context.get(self._writer, 0)
            if seen > n:
                n = seen
        n += 1
        counts[self._kv.name] = n
        return (self._writer, n)


def _wire_context(context: VersionVector | None) -> list[list[Any]] | None:
    return None if context is None else [[k, n] for k, n in context.items()]


class Write:
    """One coordinated write: its acknowledgements, and the gather waiting for more."""

    __slots__ = ("acks", "gather", "key", "store", "targets", "w")

    def __init__(self, store: str, key: Key, w: int, targets: int) -> None:
        self.store = store
        self.key = key
        self.w = w
        self.targets = targets
        self.acks = 0
        self.gather: Gather | None = None

    def outcome(self) -> int | str:
        """The acknowledgement count, or why the write is not acknowledged."""
        if self.acks >= self.w:
            return self.acks
        return (
            f"store {self.store!r}: {self.acks} of {self.targets} replicas acknowledged "
            f"{self.key!r}, w={self.w}"
        )
