"""The partitioned store's replica traffic, batched: the reads, writes, forwarded puts
and answers for one node in one turn of the event loop travel as at most two
``kv.batch`` casts ``[store, items]``, the first item at once and the rest together
at the end of the turn (a pipelined client sends a few envelopes, not one per
operation per replica). The items:

- ``["w", op, key, sibling, hint_for]``: apply a write; acknowledged unless `op` is 0
  (nobody waits for it), by ``["k", 0, [op, ...]]``: the writes of one batch
  acknowledged together, in one item after the batch's other answers;
- ``["r", op, key, hint_for]``: read a replica; answered with its sibling set;
- ``["p", op, key, value, deleted, context, w, timeout]``: a put for the coordinator
  (the first target of the key), answered with the acknowledgement count or, if the
  write was not acknowledged by `w`, the reason (a str);
- ``["a", op, answer]``: an answer to one of this node's operations;
- ``["v", op, key]`` and ``["x", 0, key, siblings]``: what a member holds for a deleted
  key, and the order to drop it where it is exactly those tombstones (`kv_reaper`);
- ``["s", 0, digests]`` and ``["m", 0, partition, entries, reply]``: anti-entropy
  between two replicas of partitions after a reconnection (`kv_sync`).

A malformed item raises DataError, is counted (``bad_data``) and skipped; the rest of
the batch is applied.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from zmesh.core.kv_wire import decode_sibling, decode_siblings, encode_siblings
from zmesh.core.version_vector import TOMBSTONE
from zmesh.errors import DataError, ZmeshError
from zmesh.runtime.kv_vnodes import check_hint

if TYPE_CHECKING:
    from zmesh.runtime.kv import KV
    from zmesh.runtime.kv_vnodes import Vnodes

__all__ = ["BATCH_MAX", "Outbox", "on_batch"]

#: Items per ``kv.batch``: a fuller batch goes at once.
BATCH_MAX = 512


class Outbox:
    """Items for other nodes: the first for a node in a turn of the loop leaves at once
    (a round trip waits no loop iteration, as the transport does for a lone message),
    the ones after it share one ``kv.batch`` sent at the end of the turn. A node that
    had a batch at the end of the last turn is busy: all its items of this turn wait
    for the batch (under a pipelined load, one envelope per node per turn, not two)."""

    def __init__(self, vnodes: Vnodes) -> None:
        self._vnodes = vnodes
        self._items: dict[str, list[Any]] = {}
        self._sent_now: set[str] = set()
        self._scheduled = False
        self.batches_out = 0

    def add(self, node: str, item: list[Any]) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        if node not in self._sent_now:
            self._sent_now.add(node)
            self._send(node, [item])
            return
        items = self._items.get(node)
        if items is None:
            items = self._items[node] = []
        items.append(item)
        if len(items) >= BATCH_MAX:
            del self._items[node]
            self._send(node, items)

    def flush(self) -> None:
        batches, self._items = self._items, {}
        self._sent_now = set(batches)  # busy: their first item next turn waits too
        if batches:
            # Flush again at the end of the next turn, even if nothing is added, so a
            # busy node's mark is cleared before its next lone item.
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._scheduled = False
        for node, items in batches.items():
            self._send(node, items)

    def _send(self, node: str, items: list[Any]) -> None:
        self.batches_out += 1
        self._vnodes.cast(node, "kv.batch", [items])


def on_batch(sender: str, kv: KV, body: Any) -> None:
    """Apply a ``kv.batch`` from `sender` (the body without the store's name)."""
    if type(body) is not list or len(body) != 1 or type(body[0]) is not list:
        raise DataError(f"kv.batch from {sender} is [store, items], got {body!r}")
    v = kv.vnodes
    waiting = kv.fanout.waiting
    acks = []
    for item in body[0]:
        try:
            # Writes and answers, nearly every item of a busy store, are handled here
            # without a call per item; `_on_item` checks and handles the rest.
            if type(item) is list:
                size = len(item)
                if size == 5 and item[0] == "w" and type(item[1]) is int:
                    key = item[2]
                    if type(key) is not str:
                        key = v.key(key)
                    hint_for = item[4]
                    if hint_for is not None:
                        check_hint(hint_for)
                    v.apply(key, decode_sibling(item[3]), hint_for)
                    if item[1]:
                        acks.append(item[1])
                    continue
                if size == 3 and item[0] == "a" and type(item[1]) is int:
                    g = waiting.get(item[1])
                    if g is not None:
                        g.add(sender, item[2])
                    continue
                if size == 3 and item[0] == "k" and type(item[2]) is list:
                    for op in item[2]:
                        if type(op) is not int:
                            raise DataError(f"an acknowledged op is an int, got {op!r}")
                        g = waiting.get(op)
                        if g is not None:
                            g.add(sender, True)
                    continue
            _on_item(kv, sender, item)
        except DataError as exc:
            v.refuse(f"kv.batch item from {sender}: {exc}")
    if acks:
        kv.outbox.add(sender, ["k", 0, acks])


def _on_item(kv: KV, sender: str, item: Any) -> None:
    if type(item) is not list or len(item) < 3 or type(item[1]) is not int:
        raise DataError(f"a kv.batch item is [kind, op, ...], got {item!r}")
    kind, op = item[0], item[1]
    v = kv.vnodes
    if kind == "w":
        raise DataError(f"a write is ['w', op, key, sibling, hint_for], got {item!r}")
    elif kind == "a":
        raise DataError(f"an answer is ['a', op, answer], got {item!r}")
    elif kind == "k":
        raise DataError(f"acknowledgements are ['k', 0, [op, ...]], got {item!r}")
    elif kind == "r":
        if len(item) != 4:
            raise DataError(f"a read is ['r', op, key, hint_for], got {item!r}")
        answer = encode_siblings(v.held(v.key(item[2]), check_hint(item[3])))
        kv.outbox.add(sender, ["a", op, answer])
    elif kind == "p":
        _on_put(kv, sender, item)
    elif kind == "s":
        if len(item) != 3:
            raise DataError(f"partition digests are ['s', op, digests], got {item!r}")
        kv.sync.on_digests(sender, item[2])
    elif kind == "m":
        if len(item) != 5:
            raise DataError(f"a partition push is ['m', op, part, entries, reply]: {item!r}")
        kv.sync.on_merge(sender, item[2], item[3], item[4])
    elif kind == "v":
        if len(item) != 3:
            raise DataError(f"a view is ['v', op, key], got {item!r}")
        kv.outbox.add(sender, ["a", op, encode_siblings(v.local_view(v.key(item[2])))])
    elif kind == "x":
        if len(item) != 4:
            raise DataError(f"a reap is ['x', op, key, siblings], got {item!r}")
        kv.reaper.drop(v.key(item[2]), decode_siblings(item[3]))
    else:
        raise DataError(f"unknown kv.batch item kind {kind!r}")


def _on_put(kv: KV, sender: str, item: list[Any]) -> None:
    if len(item) != 8:
        raise DataError(
            f"a put is ['p', op, key, value, deleted, context, w, timeout], got {item!r}"
        )
    _, op, key, value, deleted, context, w, timeout = item
    key = kv.vnodes.key(key)
    if type(deleted) is not bool or type(w) is not int or not 1 <= w <= kv.n:
        raise DataError(f"a put from {sender}: bad deleted or w: {item!r}")
    if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise DataError(f"a put from {sender}: bad timeout {timeout!r}")
    ctx = None
    if context is not None:
        if type(context) is not list:
            raise DataError(f"a put from {sender}: a context is a list of pairs")
        ctx = {}
        for pair in context:
            if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                    or type(pair[1]) is not int or pair[1] < 1):  # fmt: skip
                raise DataError(f"a put from {sender}: bad context entry {pair!r}")
            ctx[pair[0]] = pair[1]

    def answer(result: int | str) -> None:
        kv.outbox.add(sender, ["a", op, result])

    try:
        kv.writes.then(key, TOMBSTONE if deleted else value, w, ctx, float(timeout), answer)
    except ZmeshError as exc:
        answer(str(exc))
