"""The `hash` shard map against a real PostgreSQL: the same hash, the same partition.

For many random integer and text keys (and the edges of bigint), the server's own
hashint8extended / hashtextextended give the values proxy.shard.maps computes, and a row inserted
into a table ``PARTITION BY HASH (k)`` with N partitions lands in partition ``REMAINDER i``
exactly when `HashMap` names shard i. The expected values come from the server, never from us.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from proxy.devstack.postgres import start_pg_cluster
from proxy.shard.maps import (
    HASH_PARTITION_SEED,
    INT8_MAX,
    INT8_MIN,
    HashMap,
    hashint8extended,
    hashtextextended,
)

_EDGES = [0, 1, -1, 2, -2, 42, (1 << 31) - 1, 1 << 31, -(1 << 31), -(1 << 31) - 1, (1 << 32),
          -(1 << 32), INT8_MAX, INT8_MIN, INT8_MAX - 1, INT8_MIN + 1]


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _int_keys(rng: random.Random, n: int) -> list[int]:
    keys = list(_EDGES)
    keys += [rng.randint(INT8_MIN, INT8_MAX) for _ in range(n)]
    keys += [rng.randint(-100_000, 100_000) for _ in range(n)]
    return keys


def _text_keys(rng: random.Random, n: int) -> list[str]:
    alphabet = "abcxyzABC0123456789 _-'|\\\n\u00e9\u00df\u4e2d\u6587\U0001f600"
    keys = ["", "a", "ab", "abc", "abcd", "abcdefgh", "abcdefghijk", "abcdefghijkl", "abcdefghijklm"]
    for _ in range(n):
        keys.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))
    return keys


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # One server for the module: the tests only ask it for hashes and placements (the partition
    # test drops and recreates its own tables first).
    with start_pg_cluster(0, log_dir=tmp_path_factory.mktemp("shardhash"), name="shardhash") as cluster:
        assert cluster.primary.psql("show server_encoding") == "UTF8"
        yield cluster.primary


def test_hashint8extended_matches_the_server(pg: Any) -> None:
    keys = _int_keys(random.Random(1414), 400)
    values = ",".join(f"({i}, '{k}'::bigint)" for i, k in enumerate(keys))
    seeds = [0, 1, HASH_PARTITION_SEED, 0xFFFFFFFFFFFFFFFF]
    for seed in seeds:
        out = pg.psql(
            f"select i, hashint8extended(k, {_signed(seed)}::bigint) from (values {values}) v(i, k) order by i"
        )
        got = {int(i): int(h) for i, h in _rows(out)}
        assert len(got) == len(keys)
        for i, key in enumerate(keys):
            assert _signed(hashint8extended(key, seed)) == got[i], (key, seed)


def test_hashtextextended_matches_the_server(pg: Any) -> None:
    keys = _text_keys(random.Random(1415), 300)
    values = ",".join(f"({i}, {_lit(k)}::text)" for i, k in enumerate(keys))
    for seed in (0, 7, HASH_PARTITION_SEED):
        out = pg.psql(
            f"select i, hashtextextended(k, {_signed(seed)}::bigint) from (values {values}) v(i, k) order by i"
        )
        got = {int(i): int(h) for i, h in _rows(out)}
        assert len(got) == len(keys)
        for i, key in enumerate(keys):
            assert _signed(hashtextextended(key, seed)) == got[i], (key, seed)


@pytest.mark.parametrize("modulus", [2, 4, 5, 7])
def test_hash_map_matches_partition_by_hash(pg: Any, modulus: int) -> None:
    rng = random.Random(modulus)
    int_keys = sorted(set(_int_keys(rng, 300)))
    text_keys = sorted(set(_text_keys(rng, 200)))
    ddl = ["drop table if exists hp_i, hp_t; create table hp_i (k bigint) partition by hash (k);",
           "create table hp_t (i int, k text) partition by hash (k);"]
    for r in range(modulus):
        ddl.append(f"create table hp_i_{r} partition of hp_i for values with (modulus {modulus}, remainder {r});")
        ddl.append(f"create table hp_t_{r} partition of hp_t for values with (modulus {modulus}, remainder {r});")
    ddl.append("insert into hp_i values " + ",".join(f"('{k}')" for k in int_keys) + ";")
    ddl.append("insert into hp_t values " + ",".join(f"({i}, {_lit(k)})" for i, k in enumerate(text_keys)) + ";")
    pg.psql("\n".join(ddl))

    shard_map = HashMap(tuple(f"s{r}" for r in range(modulus)))
    placed = {int(k): p for k, p in _rows(pg.psql("select k, tableoid::regclass from hp_i"))}
    assert set(placed) == set(int_keys)
    for key in int_keys:
        assert placed[key] == f"hp_i_{shard_map.shard_for(key)[1:]}", key
    placed_t = {int(i): p for i, p in _rows(pg.psql("select i, tableoid::regclass from hp_t"))}
    assert set(placed_t) == set(range(len(text_keys)))
    for i, key in enumerate(text_keys):
        assert placed_t[i] == f"hp_t_{shard_map.shard_for(key)[1:]}", key
