"""HashRing: build time, lookup rate against uhashring on the same keys, balance, and the
keys moved by adding a node. Every timing is the median of several repetitions.

    python scripts/bench_ring.py [--keys 100000] [--repeat 7]

uhashring is a bench-only dependency (`pip install zmesh[bench]`); it runs with the same
128 vnodes per node so that the two rings do the same bisect.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from random import Random

import xxhash
from uhashring import HashRing as UHashRing

from zmesh.core.ring import HashRing, Key

VNODES = 128


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_all(names: list[str]) -> HashRing:
    return HashRing(names)


def build_one_by_one(names: list[str]) -> HashRing:
    ring = HashRing()
    for name in names:
        ring.add_node(name)
    return ring


def lookups(lookup: Callable[[Key], str], keys: list[Key]) -> None:
    for key in keys:
        lookup(key)


def arc_imbalance(names: list[str]) -> float:
    """max/mean of the exact key-space shares (the limit of infinitely many keys), from
    the documented point formula."""
    points = sorted(
        (xxhash.xxh3_64_intdigest(name.encode(), i), name) for name in names for i in range(VNODES)
    )
    share: Counter[str] = Counter()
    previous = points[-1][0] - 2**64
    for point, name in points:
        share[name] += point - previous
        previous = point
    return max(share.values()) / (2**64 / len(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    keys: list[Key] = [f"key:{i}" for i in range(args.keys)]
    int_keys: list[Key] = list(range(args.keys))
    rows: list[tuple[str, str, str]] = []

    names100 = [f"node{i}" for i in range(100)]
    bulk = median_seconds(lambda: build_all(names100), args.repeat)
    grown = median_seconds(lambda: build_one_by_one(names100), args.repeat)
    theirs_build = median_seconds(lambda: UHashRing(names100, vnodes=VNODES), args.repeat)
    assert build_all(names100) == build_one_by_one(names100)
    rows.append(("build 100 nodes, constructor", f"{bulk * 1e3:.1f} ms", "<= 50 ms"))
    rows.append(("build 100 nodes, 100 x add_node", f"{grown * 1e3:.1f} ms", "<= 50 ms"))
    rows.append(("build 100 nodes, uhashring", f"{theirs_build * 1e3:.1f} ms", "(reference)"))

    names10 = [f"node{i}" for i in range(10)]
    ours = HashRing(names10)
    theirs = UHashRing(names10, vnodes=VNODES)
    ours_s = median_seconds(lambda: lookups(ours.key_to_node, keys), args.repeat)
    theirs_s = median_seconds(lambda: lookups(theirs.get_node, keys), args.repeat)
    ints_s = median_seconds(lambda: lookups(ours.key_to_node, int_keys), args.repeat)
    replicas_s = median_seconds(
        lambda: lookups(lambda key: ours.key_to_nodes(key, 3)[0], keys), args.repeat
    )
    n = len(keys)
    rows.append(("key_to_node, str keys, 10 nodes", f"{n / ours_s / 1e6:.2f} M/s", ""))
    rows.append(("uhashring get_node, same keys", f"{n / theirs_s / 1e6:.2f} M/s", ""))
    rows.append(("  ratio zmesh / uhashring", f"{theirs_s / ours_s:.2f}x", ">= 2x"))
    rows.append(("key_to_node, int keys", f"{n / ints_s / 1e6:.2f} M/s", ""))
    rows.append(("key_to_nodes(key, 3), str keys", f"{n / replicas_s / 1e6:.2f} M/s", ""))

    load = Counter(map(ours.key_to_node, keys))
    mean = n / len(names10)
    rows.append(("max/mean load, 10 nodes", f"{max(load.values()) / mean:.3f}", "<= 1.2"))
    rows.append(("min/mean load, 10 nodes", f"{min(load.values()) / mean:.3f}", ""))

    before = list(map(ours.key_to_node, keys))
    ours.add_node("node10")
    after = list(map(ours.key_to_node, keys))
    moved = [new for old, new in zip(before, after, strict=True) if old != new]
    assert set(moved) <= {"node10"}, "a key moved between two old nodes"
    bound = 1 / 11 + 0.02
    rows.append(("keys moved by an 11th node", f"{len(moved) / n:.2%}", f"<= {bound:.2%}"))

    # How typical the fixed names are: exact shares over random 10-name sets.
    rng = Random(7)
    spread = sorted(
        arc_imbalance([f"{rng.getrandbits(32):08x}-{i}" for i in range(10)]) for _ in range(200)
    )
    rows.append(("max/mean share, 200 random 10-node sets", "", ""))
    rows.append(("  median", f"{statistics.median(spread):.3f}", ""))
    rows.append(("  90th percentile", f"{spread[int(0.9 * len(spread))]:.3f}", ""))
    rows.append(("  worst", f"{spread[-1]:.3f}", ""))
    rows.append(("  sets over 1.2", f"{sum(s > 1.2 for s in spread) / len(spread):.0%}", ""))

    print(
        f"python {platform.python_version()} on {platform.machine()}, xxhash {version('xxhash')},"
        f" uhashring {version('uhashring')}; {n} keys, vnodes {VNODES},"
        f" median of {args.repeat}"
    )
    rows.insert(0, ("measure", "result", "target"))
    w0, w1, w2 = (max(len(row[i]) for row in rows) for i in range(3))
    for at, (measure, result, target) in enumerate(rows):
        print(f"| {measure:<{w0}} | {result:>{w1}} | {target:<{w2}} |")
        if at == 0:
            print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 1)}:|{'-' * (w2 + 2)}|")


if __name__ == "__main__":
    main()
