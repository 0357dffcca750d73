"""Shard maps: PostgreSQL's hash on reference values, the maps' invariants, the reshard dry run.

The reference values below were printed by a PostgreSQL 15 server (hashtextextended,
hashint8extended, and the partition a row took in a table PARTITION BY HASH with MODULUS 5);
pgcat's sharding.rs lists the same partitions for 1..54. tests/integration/test_shard_hash_parity.py
checks thousands more against a live server.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.shard.maps import (
    HASH_PARTITION_SEED,
    INT8_MAX,
    INT8_MIN,
    ConsistentMap,
    DedicatedMap,
    HashMap,
    KeyTypeError,
    ModuloMap,
    RangeMap,
    hashint8extended,
    hashtextextended,
    key_moves,
)

FIVE = HashMap(("s0", "s1", "s2", "s3", "s4"))
ints = st.integers(min_value=INT8_MIN, max_value=INT8_MAX)


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def test_hashint8extended_reference_value() -> None:
    assert _signed(hashint8extended(INT8_MIN, HASH_PARTITION_SEED)) == -6050265599104649060


@pytest.mark.parametrize(
    ("text", "seed0", "partition_seed"),
    [
        ("", -6939563903564495251, -5700645584453517373),
        ("a", 3591986179850072241, -6705225459120232837),
        ("user-42", 2340617724542842103, 646029547852301266),
        ("héllo wörld, a longer key", -2607526048757814927, 8198941035946838877),
    ],
)
def test_hashtextextended_reference_values(text: str, seed0: int, partition_seed: int) -> None:
    assert _signed(hashtextextended(text, 0)) == seed0
    assert _signed(hashtextextended(text, HASH_PARTITION_SEED)) == partition_seed


@pytest.mark.parametrize(
    ("key", "partition"), [(1, 0), (0, 3), (42, 4), (-1, 4), (INT8_MIN, 4), (4, 0), (2, 1), (6, 2), (8, 3)]
)
def test_hash_map_takes_the_partition_postgresql_takes(key: int, partition: int) -> None:
    assert FIVE.shard_for(key) == f"s{partition}"


def test_modulo_negative_keys_use_floor_modulo() -> None:
    m = ModuloMap(("a", "b", "c", "d"))
    assert m.shard_for(-7) == "b"  # -7 mod 4 = 1 (PostgreSQL's -7 % 4 would be -3)
    assert m.shard_for(7) == "d"
    with pytest.raises(KeyTypeError):
        m.shard_for("7")


@given(ints, st.integers(min_value=1, max_value=64))
def test_modulo_matches_the_documented_sql(key: int, n: int) -> None:
    m = ModuloMap(tuple(f"s{i}" for i in range(n)))
    c_rem = abs(key) % n * (1 if key >= 0 else -1)  # C / PostgreSQL '%' (truncating)
    assert m.shard_for(key) == f"s{(c_rem + n) % n}"  # ((key % N) + N) % N in SQL


@given(st.one_of(ints, st.text()), st.integers(min_value=1, max_value=16))
def test_every_map_names_one_of_its_shards(key: int | str, n: int) -> None:
    shards = tuple(f"s{i}" for i in range(n))
    for m in (HashMap(shards), ConsistentMap(shards, vnodes=8)):
        assert m.shard_for(key) in shards
        assert m.shard_for(key) == m.shard_for(key)


def test_keys_out_of_bigint_range_are_refused() -> None:
    for bad in (INT8_MAX + 1, INT8_MIN - 1, 1.5, True, None):
        with pytest.raises(KeyTypeError):
            FIVE.shard_for(bad)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=8), st.integers(min_value=0, max_value=1000))
def test_consistent_adding_a_shard_moves_about_one_in_n_plus_one(n: int, offset: int) -> None:
    old = ConsistentMap(tuple(f"s{i}" for i in range(n)))
    new = ConsistentMap(tuple(f"s{i}" for i in range(n + 1)))
    keys = range(offset * 10_000, offset * 10_000 + 4000)
    moves = key_moves(old, new, keys)
    moved = sum(len(v) for v in moves.values())
    # Every moved key goes to the new shard, and about 1/(n+1) of them move (160 vnodes: the
    # new shard's share is within ~25% of fair with this many keys).
    assert all(dst == f"s{n}" for _, dst in moves)
    fair = len(keys) / (n + 1)
    assert 0.6 * fair <= moved <= 1.4 * fair, (moved, fair)


def test_modulo_adding_a_shard_moves_most_keys() -> None:
    old = ModuloMap(("s0", "s1", "s2", "s3"))
    new = ModuloMap(("s0", "s1", "s2", "s3", "s4"))
    moves = key_moves(old, new, range(10_000))
    moved = sum(len(v) for v in moves.values())
    assert moved == 8000  # keys stay only when k % 4 == k % 5, i.e. k mod 20 in 0..3
    assert sorted(moves[("s0", "s1")])[:3] == [16, 36, 56]  # k % 4 == 0 and k % 5 == 1


@given(st.lists(ints, min_size=1, max_size=6, unique=True), st.lists(ints, max_size=50))
def test_range_map_puts_each_key_between_its_bounds(bounds: list[int], keys: list[int]) -> None:
    uppers = tuple(sorted(bounds))
    shards = tuple(f"r{i}" for i in range(len(uppers) + 1))
    m = RangeMap(shards, uppers)
    for key in keys + list(uppers):
        i = int(m.shard_for(key)[1:])
        assert i == 0 or uppers[i - 1] <= key
        assert i == len(uppers) or key < uppers[i]


def test_range_map_text_bounds_and_bad_bounds() -> None:
    m = RangeMap(("a-l", "m-z"), ("m",))
    assert m.shard_for("alice") == "a-l" and m.shard_for("zoe") == "m-z" and m.shard_for("m") == "m-z"
    with pytest.raises(KeyTypeError):
        m.shard_for(5)
    with pytest.raises(ValueError):
        RangeMap(("a", "b", "c"), (10, 5))
    with pytest.raises(ValueError):
        RangeMap(("a", "b"), ())


@given(ints)
def test_dedicated_overrides_any_map(key: int) -> None:
    base = HashMap(("s0", "s1"))
    m = DedicatedMap(base, {key: "hot"})
    assert m.shard_for(key) == "hot"
    assert m.shards == ("s0", "s1", "hot")
    other = key + 1 if key < INT8_MAX else key - 1
    assert m.shard_for(other) == base.shard_for(other)


def test_key_moves_groups_by_source_and_target() -> None:
    old = DedicatedMap(ModuloMap(("a", "b")), {})
    new = DedicatedMap(ModuloMap(("a", "b")), {4: "hot"})
    assert key_moves(old, new, range(6)) == {("a", "hot"): [4]}


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=5, unique=True),
       st.one_of(st.none(), st.integers(-1200, 1200)), st.one_of(st.none(), st.integers(-1200, 1200)),
       st.dictionaries(st.integers(-1200, 1200), st.just("hot"), max_size=3))
def test_shards_between_covers_every_key_in_the_range(bounds: list[int], lo: int | None,
                                                      hi: int | None, dedicated: dict) -> None:
    uppers = tuple(sorted(bounds))
    m = DedicatedMap(RangeMap(tuple(f"r{i}" for i in range(len(uppers) + 1)), uppers), dedicated)
    shards = m.shards_between(lo, hi)
    assert shards is not None
    first = lo if lo is not None else -1300
    last = hi if hi is not None else 1300
    for key in range(first, last + 1):
        assert m.shard_for(key) in shards, key
    assert DedicatedMap(HashMap(("a", "b")), {}).shards_between(lo, hi) is None
