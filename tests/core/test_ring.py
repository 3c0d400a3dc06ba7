"""The consistent-hash ring: stable placement, balance, minimal disruption, replicas."""

from __future__ import annotations

import ast
import enum
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import xxhash
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from zmesh.core import ring as ring_module
from zmesh.core.ring import HashRing, Key, KeyTypeError, encode_key, hash_key
from zmesh.errors import ConfigError, EmptyRing, ZmeshError

REPO = Path(__file__).resolve().parents[2]

names = st.text(min_size=1, max_size=8)
weighted = st.dictionaries(names, st.integers(1, 3), min_size=1, max_size=6)
vnodes_st = st.sampled_from([1, 2, 7, 32])
scalar_keys = st.text(max_size=6) | st.binary(max_size=6) | st.integers(-(2**70), 2**70)
keys_st: st.SearchStrategy[Key] = st.recursive(
    scalar_keys, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=8
)

# (add?, name, weight) steps over a few names, so that names come and go repeatedly.
membership_ops = st.lists(
    st.tuples(st.booleans(), st.sampled_from("abcdefg"), st.integers(1, 3)), min_size=1
)

# Fixed keys of every supported type, for the placement-comparison properties.
MIXED_KEYS: list[Key] = [
    *(f"key-{i}" for i in range(600)),
    *range(-200, 200),
    *(i.to_bytes(2, "big") for i in range(200)),
    *((f"t{i}", i) for i in range(200)),
]
# The benchmark's keys: 100k strs, as a cache or a registry would see.
BIG_KEYS = [f"key:{i}" for i in range(100_000)]


def placements(ring: HashRing, keys: Sequence[Key]) -> list[str]:
    return [ring.key_to_node(key) for key in keys]


def model_walk(weights: dict[str, int], vnodes: int, key: Key) -> list[str]:
    """The documented placement, computed the slow way: every distinct owner clockwise
    from the key's position, starting at the first point at or after it."""
    points: dict[int, str] = {}
    for name, weight in weights.items():
        for i in range(weight * vnodes):
            point = xxhash.xxh3_64_intdigest(name.encode("utf-8", "surrogatepass"), i)
            if point not in points or name < points[point]:
                points[point] = name
    order = sorted(points)
    position = hash_key(key)
    start = next((i for i, point in enumerate(order) if point >= position), 0)
    walk: list[str] = []
    for point in order[start:] + order[:start]:
        if points[point] not in walk:
            walk.append(points[point])
    return walk


# -- stable hashing ------------------------------------------------------------------


def test_placement_is_identical_across_interpreters_with_different_hash_seeds() -> None:
    sample: list[Key] = ["user:1", "", "ünïcode", b"\x00\xff", 0, -1, 2**70, ("a", 1, (b"b",))]
    sample += [f"k{i}" for i in range(300)]
    code = (
        "import json\n"
        "from zmesh.core.ring import HashRing, hash_key\n"
        "ring = HashRing({'alpha': 1, 'beta': 2, 'gamma': 1, 'δέλτα': 3}, vnodes=64)\n"
        f"keys = {sample!r}\n"
        "print(json.dumps([[hash_key(k), ring.key_to_nodes(k, 3)] for k in keys]))\n"
    )
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.append(json.loads(proc.stdout))
    ring = HashRing({"alpha": 1, "beta": 2, "gamma": 1, "δέλτα": 3}, vnodes=64)
    here = [[hash_key(k), ring.key_to_nodes(k, 3)] for k in sample]
    assert outputs[0] == outputs[1] == here
    assert len({tuple(ring.key_to_nodes(k, 3)) for k in sample}) > 1  # keys really spread


def test_canonical_encoding_and_positions_are_pinned() -> None:
    # xxh3_64 is a frozen algorithm: these values hold on every platform and version.
    # A change here moves keys between nodes of mixed-version clusters.
    assert encode_key("héllo") == b"s" + "héllo".encode()
    assert encode_key(b"1") == b"b1"
    assert encode_key(0) == b"i\x00"
    assert encode_key(128) == b"i\x00\x80"
    assert encode_key(-129) == b"i\xff\x7f"
    assert encode_key(("1",)) == b"t" + (1).to_bytes(8, "big") + (2).to_bytes(8, "big") + b"s1"
    assert hash_key("1") == 11107950631770992849
    assert hash_key(b"1") == 570751287619963250
    assert hash_key(1) == 7300392524374691245
    assert hash_key(("a", 1, b"b")) == 2836087010981694948
    ring = HashRing({"alpha": 1, "beta": 2, "gamma": 1})
    pinned: list[Key] = ["user:1", 42, b"x", ("t", 1)]
    assert [ring.key_to_nodes(k, 3) for k in pinned] == [
        ["beta", "alpha", "gamma"],
        ["beta", "gamma", "alpha"],
        ["alpha", "gamma", "beta"],
        ["gamma", "beta", "alpha"],
    ]


@settings(max_examples=40)
@given(weighted, vnodes_st, keys_st)
def test_lookups_follow_the_documented_point_formula(
    weights: dict[str, int], vnodes: int, key: Key
) -> None:
    ring = HashRing(weights, vnodes=vnodes)
    walk = model_walk(weights, vnodes, key)
    assert ring.key_to_nodes(key, len(weights)) == walk
    assert ring.key_to_node(key) == walk[0]


# -- the key encoding ----------------------------------------------------------------


def decode_key(data: bytes) -> Key:
    """Inverse of encode_key: if every encoding decodes back, no two keys share one."""
    tag, payload = data[:1], data[1:]
    if tag == b"s":
        return payload.decode("utf-8", "surrogatepass")
    if tag == b"b":
        return payload
    if tag == b"i":
        assert payload, "an int always has at least one byte"
        return int.from_bytes(payload, "big", signed=True)
    assert tag == b"t"
    count, at = int.from_bytes(payload[:8], "big"), 8
    items = []
    for _ in range(count):
        size = int.from_bytes(payload[at : at + 8], "big")
        items.append(decode_key(payload[at + 8 : at + 8 + size]))
        at += 8 + size
    assert at == len(payload)
    return tuple(items)


def typed(key: object) -> object:
    """`key` with each scalar's type attached, so that "1", b"1" and 1 compare unequal."""
    if isinstance(key, tuple):
        return ("tuple", tuple(typed(item) for item in key))
    return (type(key).__name__, key)


@settings(max_examples=200)
@given(keys_st)
@example("\ud800")
@example(("", b"", 0, ()))
def test_key_encoding_decodes_back_to_the_same_typed_key(key: Key) -> None:
    assert typed(decode_key(encode_key(key))) == typed(key)


@settings(max_examples=200)
@given(keys_st, keys_st)
def test_key_encoding_is_injective_across_types(a: Key, b: Key) -> None:
    assert (encode_key(a) == encode_key(b)) == (typed(a) == typed(b))


def test_look_alike_keys_of_different_types_get_different_positions() -> None:
    tricky: list[Key] = [
        "", b"", 0, (), ((),), ("",), (b"",), (0,),
        "1", b"1", 1, -1, 255, -256, 256, ("1",), (("1",),), (b"1",), (1,),
        ("a", "b"), ("ab",), ("a", ("b",)), (("a",), "b"), ("a", "b", ""),
        "s1", b"s1", "i\x01", "\x00", b"\x00", 2**64, -(2**64),
    ]  # fmt: skip
    encodings = [encode_key(key) for key in tricky]
    assert len(set(encodings)) == len(tricky)
    assert len({hash_key(key) for key in tricky}) == len(tricky)


def test_str_bytes_and_int_subclasses_place_like_their_base_value() -> None:
    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    ring = HashRing(["a", "b", "c", "d"])
    assert encode_key(Colour.RED) == encode_key("red")
    assert encode_key(Level.HIGH) == encode_key(3)
    assert ring.key_to_node(Colour.RED) == ring.key_to_node("red")
    assert hash_key((Level.HIGH, Colour.RED)) == hash_key((3, "red"))


@pytest.mark.parametrize(
    "key", [True, False, (1, True), 1.0, None, [1], bytearray(b"x"), {"a": 1}, frozenset()]
)
def test_bools_and_other_types_are_refused_with_a_typed_error(key: Any) -> None:
    ring = HashRing(["a", "b"])
    lookups: list[Callable[[Any], object]] = [
        encode_key,
        hash_key,
        ring.key_to_node,
        lambda k: ring.key_to_nodes(k, 2),
    ]
    for lookup in lookups:
        with pytest.raises(KeyTypeError) as info:
            lookup(key)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, ZmeshError)
        expected = "bool" if isinstance(key, bool) or key == (1, True) else type(key).__name__
        assert expected in str(info.value)


# -- balance and weights -------------------------------------------------------------


def test_ten_nodes_share_100k_keys_within_20_percent_of_the_mean() -> None:
    ring = HashRing([f"node{i}" for i in range(10)])
    load = Counter(map(ring.key_to_node, BIG_KEYS))
    assert set(load) == set(ring.nodes)
    mean = len(BIG_KEYS) / 10
    assert max(load.values()) / mean <= 1.2
    assert min(load.values()) / mean >= 0.8


def test_adding_an_eleventh_node_moves_at_most_a_eleventh_of_keys_plus_2_percent() -> None:
    ring = HashRing([f"node{i}" for i in range(10)])
    before = placements(ring, BIG_KEYS)
    ring.add_node("node10")
    after = placements(ring, BIG_KEYS)
    moved = [new for old, new in zip(before, after, strict=True) if old != new]
    assert set(moved) == {"node10"}
    assert len(moved) / len(BIG_KEYS) <= 1 / 11 + 0.02


def test_keys_split_in_proportion_to_weights_within_20_percent() -> None:
    ring = HashRing({"a": 1, "b": 2, "c": 3, "d": 4})
    load = Counter(map(ring.key_to_node, BIG_KEYS))
    for name, weight in ring.weights.items():
        fair = len(BIG_KEYS) * weight / 10
        assert abs(load[name] / fair - 1) <= 0.2, (name, load[name], fair)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5))
def test_any_weights_split_keys_proportionally_given_enough_vnodes(weights: list[int]) -> None:
    # 1024 points per unit of weight: a unit's share varies by ~3%, 20% is far out.
    ring = HashRing({f"w{i}": w for i, w in enumerate(weights)}, vnodes=1024)
    keys = BIG_KEYS[:40_000]
    load = Counter(map(ring.key_to_node, keys))
    for name, weight in ring.weights.items():
        fair = len(keys) * weight / sum(weights)
        assert abs(load[name] / fair - 1) <= 0.2, (name, load[name], fair)


# -- minimal disruption --------------------------------------------------------------


@settings(max_examples=50)
@given(weighted, names, st.integers(1, 3), vnodes_st)
def test_adding_a_node_moves_keys_only_onto_it(
    weights: dict[str, int], new: str, weight: int, vnodes: int
) -> None:
    assume(new not in weights)
    ring = HashRing(weights, vnodes=vnodes)
    before = placements(ring, MIXED_KEYS)
    ring.add_node(new, weight)
    after = placements(ring, MIXED_KEYS)
    for old, now in zip(before, after, strict=True):
        assert now in (old, new)


@settings(max_examples=50)
@given(weighted, vnodes_st, st.data())
def test_removing_a_node_moves_only_its_keys(
    weights: dict[str, int], vnodes: int, data: st.DataObject
) -> None:
    assume(len(weights) >= 2)
    gone = data.draw(st.sampled_from(sorted(weights)))
    ring = HashRing(weights, vnodes=vnodes)
    before = placements(ring, MIXED_KEYS)
    ring.remove_node(gone)
    after = placements(ring, MIXED_KEYS)
    for old, now in zip(before, after, strict=True):
        assert now != gone
        assert old == gone or now == old


@settings(max_examples=50)
@given(weighted, names, st.integers(1, 3), vnodes_st)
def test_adding_then_removing_a_node_restores_every_placement(
    weights: dict[str, int], new: str, weight: int, vnodes: int
) -> None:
    assume(new not in weights)
    ring = HashRing(weights, vnodes=vnodes)
    before = [ring.key_to_nodes(key, len(ring)) for key in MIXED_KEYS[::4]]
    ring.add_node(new, weight)
    ring.remove_node(new)
    assert ring == HashRing(weights, vnodes=vnodes)
    assert [ring.key_to_nodes(key, len(ring)) for key in MIXED_KEYS[::4]] == before


@settings(max_examples=40)
@given(weighted, vnodes_st, st.randoms(use_true_random=False))
def test_placement_does_not_depend_on_the_order_nodes_were_added(
    weights: dict[str, int], vnodes: int, rnd: random.Random
) -> None:
    order = sorted(weights)
    rnd.shuffle(order)
    grown = HashRing(vnodes=vnodes)
    for name in order:
        grown.add_node(name, weights[name])
    built = HashRing(weights, vnodes=vnodes)
    assert grown == built
    keys = MIXED_KEYS[::4]
    assert [grown.key_to_nodes(k, len(built)) for k in keys] == [
        built.key_to_nodes(k, len(built)) for k in keys
    ]


@settings(max_examples=40)
@given(weighted, vnodes_st, st.data())
def test_changing_a_weight_moves_keys_only_to_or_from_that_node(
    weights: dict[str, int], vnodes: int, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(weights)))
    new_weight = data.draw(st.integers(1, 4).filter(lambda w: w != weights[name]))
    ring = HashRing(weights, vnodes=vnodes)
    before = placements(ring, MIXED_KEYS)
    ring.add_node(name, new_weight)
    after = placements(ring, MIXED_KEYS)
    assert ring == HashRing({**weights, name: new_weight}, vnodes=vnodes)
    for old, now in zip(before, after, strict=True):
        if new_weight > weights[name]:
            assert now in (old, name)  # heavier: it only gains keys
        else:
            assert old in (now, name)  # lighter: it only sheds keys


@settings(max_examples=30)
@given(membership_ops)
def test_point_clashes_resolve_to_the_smallest_name_whatever_the_history(
    ops: list[tuple[bool, str, int]],
) -> None:
    # Squeeze every point into 32 positions so clashes (odds ~2**-64 for real) are the
    # norm, and check the smallest-name rule survives any sequence of changes.
    def crowded(name: str, count: int) -> list[int]:
        return [xxhash.xxh3_64_intdigest(name.encode(), i) % 32 << 59 for i in range(count)]

    with mock.patch.object(ring_module, "_points", crowded):
        ring = HashRing(vnodes=4)
        for add, name, weight in ops:
            if add:
                ring.add_node(name, weight)
            else:
                ring.remove_node(name)
        assume(len(ring) > 0)
        keys = MIXED_KEYS[::10]
        assert placements(ring, keys) == placements(HashRing(ring.weights, vnodes=4), keys)
        for key in keys:
            position = hash_key(key)
            owners: dict[int, str] = {}
            for name, weight in ring.weights.items():
                for point in crowded(name, weight * 4):
                    owners[point] = min(name, owners.get(point, name))
            order = sorted(owners)
            first = next((p for p in order if p >= position), order[0])
            assert ring.key_to_node(key) == owners[first]


# -- replicas ------------------------------------------------------------------------


@settings(max_examples=100)
@given(weighted, vnodes_st, keys_st, st.integers(0, 8))
def test_key_to_nodes_gives_min_n_len_distinct_nodes_starting_at_key_to_node(
    weights: dict[str, int], vnodes: int, key: Key, n: int
) -> None:
    ring = HashRing(weights, vnodes=vnodes)
    replicas = ring.key_to_nodes(key, n)
    assert len(replicas) == min(n, len(ring))
    assert len(set(replicas)) == len(replicas)
    assert set(replicas) <= set(ring.nodes)
    if n:
        assert replicas[0] == ring.key_to_node(key)
    # A larger n extends the list, it never reorders it.
    assert ring.key_to_nodes(key, len(ring))[: len(replicas)] == replicas


def test_key_to_nodes_wraps_around_past_the_last_point() -> None:
    # libring#39: keys past the highest point got fewer replicas than asked for.
    ring = HashRing(["a", "b", "c"], vnodes=1)
    top = max(xxhash.xxh3_64_intdigest(name.encode(), 0) for name in "abc")
    lowest_owner = min("abc", key=lambda name: xxhash.xxh3_64_intdigest(name.encode(), 0))
    past_top = [key for key in (f"k{i}" for i in range(2000)) if hash_key(key) > top]
    assert past_top, "some keys must land past the highest point for this to test anything"
    for key in past_top:
        replicas = ring.key_to_nodes(key, 3)
        assert sorted(replicas) == ["a", "b", "c"]
        assert replicas[0] == lowest_owner == ring.key_to_node(key)


def test_key_to_nodes_refuses_a_negative_or_non_int_count() -> None:
    ring = HashRing(["a", "b"])
    for bad in (-1, 1.5, "2", None):
        with pytest.raises(ConfigError, match=re.escape(repr(bad))):
            ring.key_to_nodes("k", bad)  # type: ignore[arg-type]
    assert ring.key_to_nodes("k", 0) == []


# -- errors --------------------------------------------------------------------------


def test_an_empty_ring_raises_empty_ring_for_every_lookup() -> None:
    ring = HashRing()
    for lookup in (lambda: ring.key_to_node("k"), lambda: ring.key_to_nodes("k", 0)):
        with pytest.raises(EmptyRing, match="no nodes") as info:
            lookup()
        assert isinstance(info.value, ZmeshError)
        assert isinstance(info.value, LookupError)
    ring.add_node("a")
    assert ring.key_to_node("k") == "a"
    ring.remove_node("a")
    with pytest.raises(EmptyRing):
        ring.key_to_node("k")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "128", True, None])
def test_bad_vnodes_and_weights_raise_config_error_naming_the_value(bad: object) -> None:
    with pytest.raises(ConfigError, match="vnodes") as info:
        HashRing(["a"], vnodes=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    with pytest.raises(ConfigError, match="weight") as info:
        HashRing({"a": 1, "b": bad})  # type: ignore[dict-item,unused-ignore]
    assert repr(bad) in str(info.value) and "'b'" in str(info.value)
    ring = HashRing(["a"])
    with pytest.raises(ConfigError, match="weight"):
        ring.add_node("b", bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weight"):
        ring.add_node("a", bad)  # type: ignore[arg-type]
    assert ring == HashRing(["a"])  # a refused change leaves the ring as it was


@pytest.mark.parametrize("bad", ["", 1, b"a", None])
def test_node_names_must_be_non_empty_str(bad: object) -> None:
    with pytest.raises(ConfigError, match="name"):
        HashRing([bad])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="name"):
        HashRing().add_node(bad)  # type: ignore[arg-type]


def test_a_single_string_is_not_taken_for_a_list_of_nodes() -> None:
    with pytest.raises(ConfigError, match="'abc'"):
        HashRing("abc")


# -- the container API ---------------------------------------------------------------


def test_container_api_reports_nodes_weights_and_membership() -> None:
    ring = HashRing({"c": 1, "a": 2, "b": 1}, vnodes=16)
    assert ring.nodes == ["a", "b", "c"]
    assert ring.weights == {"a": 2, "b": 1, "c": 1}
    assert ring.vnodes == 16
    assert len(ring) == 3
    assert "a" in ring and "z" not in ring and 1 not in ring
    ring.weights["a"] = 9  # a snapshot: writing to it changes nothing
    assert ring.weights["a"] == 2
    assert HashRing(["a", "a", "b"]) == HashRing(["a", "b"])


def test_equality_means_same_nodes_weights_and_vnodes() -> None:
    assert HashRing(["a", "b"]) == HashRing({"b": 1, "a": 1})
    assert HashRing(["a", "b"]) != HashRing(["a", "b"], vnodes=64)
    assert HashRing(["a", "b"]) != HashRing({"a": 1, "b": 2})
    assert HashRing(["a"]) != HashRing(["a", "b"])
    assert HashRing(["a"]) != ["a"]
    with pytest.raises(TypeError):
        hash(HashRing(["a"]))  # mutable, so unhashable


def test_repr_names_nodes_weights_and_vnodes_and_evaluates_back() -> None:
    plain = HashRing(["b", "a"])
    heavy = HashRing({"a": 1, "b": 3}, vnodes=8)
    assert repr(plain) == "HashRing(['a', 'b'], vnodes=128)"
    assert repr(heavy) == "HashRing({'a': 1, 'b': 3}, vnodes=8)"
    assert repr(HashRing()) == "HashRing([], vnodes=128)"
    for ring in (plain, heavy):
        assert eval(repr(ring), {"HashRing": HashRing}) == ring


def test_a_copy_is_independent_of_the_original() -> None:
    ring = HashRing(["a", "b", "c"])
    before = placements(ring, MIXED_KEYS)
    clone = ring.copy()
    assert clone == ring and clone is not ring
    clone.add_node("d", 2)
    clone.remove_node("a")
    assert ring == HashRing(["a", "b", "c"])
    assert placements(ring, MIXED_KEYS) == before
    assert "d" in placements(clone, MIXED_KEYS)


def test_removing_an_unknown_node_is_a_no_op() -> None:
    ring = HashRing(["a", "b"])
    before = placements(ring, MIXED_KEYS)
    ring.remove_node("zzz")
    ring.remove_node("zzz")
    assert ring == HashRing(["a", "b"])
    assert placements(ring, MIXED_KEYS) == before


def test_re_adding_with_the_same_weight_changes_nothing() -> None:
    ring = HashRing({"a": 2, "b": 1})
    before = placements(ring, MIXED_KEYS)
    ring.add_node("a", 2)
    assert ring == HashRing({"a": 2, "b": 1})
    assert placements(ring, MIXED_KEYS) == before


def test_the_ring_module_imports_neither_asyncio_nor_zmq() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(ring_module.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    stdlib = {"__future__", "bisect", "collections", "itertools", "typing"}
    assert imported <= stdlib | {"xxhash", "zmesh"}
    assert not imported & {"asyncio", "zmq"}
