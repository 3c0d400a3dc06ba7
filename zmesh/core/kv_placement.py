"""Where a key of the partitioned store lives: partitions, vnodes and preference lists.

The keyspace is cut into `partitions` equal slices of the hash circle (a key's
partition is its ring hash scaled to the count, so every process agrees). Each
partition is a vnode placed on the cluster's `HashRing` by the key
``("zmesh.kv", partition)``; its *preference list* is the ring's next `n` distinct
nodes from there, the first being the vnode's owner.

When some of those nodes are down, `preference_list` walks further round the ring
for *fallbacks*: a fallback stands in for one missing primary and holds its writes
as hints, to hand back when the primary returns (Dynamo's sloppy quorum).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from zmesh.core.ring import HashRing, Key, hash_key
from zmesh.errors import ConfigError

__all__ = ["Target", "key_to_nodes", "key_to_partition", "partition_nodes", "preference_list"]


class Target(NamedTuple):
    """A node to write to, and the down primary it stands in for (None if primary)."""

    node: str
    hint_for: str | None


def _check_positive(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")
    return value


def key_to_partition(key: Key, partitions: int) -> int:
    """The partition of `key`, in ``range(partitions)``."""
    _check_positive("partitions", partitions)
    return (hash_key(key) * partitions) >> 64


def partition_nodes(ring: HashRing, partition: int, n: int) -> list[str]:
    """The primaries of `partition`: ``min(n, len(ring))`` distinct nodes, owner first."""
    return ring.key_to_nodes(("zmesh.kv", partition), n)


def key_to_nodes(ring: HashRing, key: Key, n: int, partitions: int) -> list[str]:
    """The primaries of `key`: the preference list of its partition."""
    return partition_nodes(ring, key_to_partition(key, partitions), n)


def preference_list(ring: HashRing, partition: int, n: int, up: Collection[str]) -> list[Target]:
    """Where to write `partition` now: each primary that is `up`, and for each one
    that is not, the next node round the ring that is up and not already chosen.

    `ring` holds every member (down ones too); fewer than `n` targets come back when
    fewer than `n` members are up.
    """
    _check_positive("n", n)
    walk = ring.key_to_nodes(("zmesh.kv", partition), len(ring))
    primaries = walk[:n]
    chosen = [p for p in primaries if p in up]
    spare = iter(node for node in walk[n:] if node in up)
    targets = [Target(p, None) for p in chosen]
    for primary in primaries:
        if primary in up:
            continue
        fallback = next(spare, None)
        if fallback is None:
            break
        targets.append(Target(fallback, primary))
    return targets
