"""Anti-entropy between the replicas of the partitioned store (Dynamo's, without the
Merkle trees): when a member comes back up (a heal, a reconnection), this node sends
it one digest per partition they are both primaries of (``["s", 0, [[partition,
digest], ...]]``); it pushes back every partition whose digest differs (``["m", 0,
partition, entries, reply]``), and this node pushes its own in turn, so both merge
what the other had. A replica that missed writes while apart (the hints for it lost
with the node that held them) converges without being read.

A digest is the sum, modulo 2**64, of one hash per key over the key and its sibling
set as the codec encodes them: independent of order, cheap to keep per partition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xxhash

from zmesh.core.kv_placement import partition_nodes
from zmesh.core.kv_wire import decode_siblings, encode_siblings
from zmesh.errors import DataError
from zmesh.runtime.kv_vnodes import HANDOFF_BATCH

if TYPE_CHECKING:
    from zmesh.runtime.kv import KV

__all__ = ["AntiEntropy"]

_MASK = 2**64 - 1


class AntiEntropy:
    """This node's side of the partition exchanges of one store."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self.counters = {"sync_partitions_out": 0, "sync_keys_in": 0}

    def shared(self, peer: str) -> list[int]:
        """The partitions both this node and `peer` are primaries of."""
        v = self._kv.vnodes
        me = v.node.name
        out = []
        for part in range(v.partitions):
            nodes = partition_nodes(v.ring, part, v.n)
            if me in nodes and peer in nodes:
                out.append(part)
        return out

    def digest(self, part: int) -> int:
        encode = self._kv._codec.encode
        total = 0
        for key, siblings in self._kv.vnodes.data.get(part, {}).items():
            total += xxhash.xxh3_64_intdigest(encode([key, encode_siblings(siblings)]))
        return total & _MASK

    def peer_up(self, peer: str) -> None:
        """`peer`, a member, is reachable again: compare the partitions we share."""
        parts = self.shared(peer)
        if parts:
            self._kv.outbox.add(peer, ["s", 0, [[p, self.digest(p)] for p in parts]])

    def on_digests(self, sender: str, digests: Any) -> None:
        if type(digests) is not list:
            raise DataError(f"partition digests from {sender} are a list, got {digests!r}")
        mine = set(self.shared(sender))
        for pair in digests:
            if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int
                    or type(pair[1]) is not int):  # fmt: skip
                raise DataError(f"a partition digest is [partition, digest], got {pair!r}")
            part, theirs = pair
            if part in mine and theirs != self.digest(part):
                self.push(sender, part, reply=True)

    def push(self, peer: str, part: int, *, reply: bool) -> None:
        """Send `peer` every key of `part` held here (in chunks); `reply`: and ask for
        its own back."""
        items = [[k, encode_siblings(s)] for k, s in self._kv.vnodes.data.get(part, {}).items()]
        self.counters["sync_partitions_out"] += 1
        chunks = [items[i : i + HANDOFF_BATCH] for i in range(0, len(items), HANDOFF_BATCH)]
        for i, chunk in enumerate(chunks or [[]]):
            last = i == len(chunks) - 1 or not chunks
            self._kv.outbox.add(peer, ["m", 0, part, chunk, reply and last])

    def on_merge(self, sender: str, part: Any, entries: Any, reply: Any) -> None:
        v = self._kv.vnodes
        if type(part) is not int or type(entries) is not list or type(reply) is not bool:
            raise DataError(f"a partition push from {sender} is [partition, entries, reply]")
        decoded = []
        for item in entries:
            if type(item) is not list or len(item) != 2:
                raise DataError(f"a pushed entry is [key, siblings], got {item!r}")
            key = v.key(item[0])
            if v.partition(key) != part:
                raise DataError(f"key {key!r} pushed from {sender} is not in partition {part}")
            decoded.append((key, decode_siblings(item[1])))
        if part not in self.shared(sender):
            return  # not ours (the members changed meanwhile): ownership handoff's job
        for key, siblings in decoded:  # all checked first: a bad push changes nothing
            v.merge(key, siblings, None, part)
        self.counters["sync_keys_in"] += len(decoded)
        if reply:
            self.push(sender, part, reply=False)
