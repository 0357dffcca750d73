"""Multi-row INSERTs split by keys.plan, run on a real server: every row lands where PostgreSQL's
own PARTITION BY HASH puts it, once, with its values intact.

Four schemas s0..s3 stand for four shards. Random batches of rows (bigint keys over the whole
range, text with quotes, backslashes and non-ASCII, numerics, NULLs) are planned with a `hash`
map; each part's deparsed INSERT runs in its shard's schema. A table partitioned by hash with
MODULUS 4 on the same server receives the original statements; the partition PostgreSQL chose
for each key must be the schema our split sent it to, and the rows must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import psycopg
import pytest

from proxy.devstack.postgres import start_pg_cluster
from proxy.shard.keys import GroupSpec, One, Some, analyze, plan
from proxy.shard.maps import INT8_MAX, INT8_MIN, HashMap

SHARDS = ("s0", "s1", "s2", "s3")
USERS = GroupSpec("users", frozenset({"users"}), "user_id")
MAPS = {"users": HashMap(SHARDS)}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    cluster = start_pg_cluster(0, log_dir=tmp_path_factory.mktemp("shardsplit"), name="shardsplit")
    try:
        conn = psycopg.connect(cluster.primary.dsn, autocommit=True)
        ddl = "(user_id bigint primary key, name text, score numeric)"
        for s in SHARDS:
            conn.execute(f"create schema {s}; create table {s}.users {ddl}")
        conn.execute(f"create schema whole; create table whole.users {ddl} partition by hash (user_id)")
        for i in range(4):
            conn.execute(f"create table whole.users_{i} partition of whole.users "
                         f"for values with (modulus 4, remainder {i})")
        yield conn
        conn.close()
    finally:
        cluster.close()


def _lit(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


@pytest.mark.parametrize("seed", range(6))
def test_split_inserts_land_where_partition_by_hash_puts_them(db: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    for s in SHARDS:
        db.execute(f"truncate {s}.users")
    db.execute("truncate whole.users")
    keys = list({rng.randint(INT8_MIN, INT8_MAX) for _ in range(40)} | {0, -1, 1, INT8_MIN, INT8_MAX})
    rows = [(k, rng.choice([None, "", "o'brien", "back\\slash", "naïve ✓", f"user {k}"]),
             rng.choice([None, "0", "-12.50", "1e3", "123456789012345678901234567890.5"]))
            for k in keys]
    for start in range(0, len(rows), 9):
        batch = rows[start : start + 9]
        values = ", ".join(f"({k}, {_lit(n)}, {_lit(sc)})" for k, n, sc in batch)
        sql = f"INSERT INTO users (user_id, name, score) VALUES {values} RETURNING user_id"
        p = plan(analyze(sql, [USERS], SHARDS), MAPS, {"users": USERS}, all_shards=SHARDS)
        parts = [(p.shard, p.sql)] if isinstance(p, One) else list(p.parts) if isinstance(p, Some) else None
        assert parts is not None, p
        returned = []
        for shard, text in parts:
            db.execute(f"set search_path = {shard}")
            returned += [r[0] for r in db.execute(text).fetchall()]
        assert sorted(returned) == sorted(k for k, _, _ in batch)
        db.execute("set search_path = whole")
        db.execute(sql)
    placed = dict(db.execute("select u.user_id, c.relname from whole.users u join pg_class c on c.oid = u.tableoid").fetchall())
    want = sorted(db.execute("select user_id, name, score::text from whole.users").fetchall())
    got = []
    for i, s in enumerate(SHARDS):
        for r in db.execute(f"select user_id, name, score::text from {s}.users").fetchall():
            assert placed[r[0]] == f"users_{i}", (r[0], s)
            got.append(r)
    assert sorted(got) == want and len(got) == len(rows)
