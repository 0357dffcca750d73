"""Scatter/gather merges against a real PostgreSQL: merged shard answers equal the direct answer.

One server holds four "shards" as schemas s0..s3 (the same table in each, rows spread by id % 4)
and schema whole with every row. For each query, every shard runs plan_gather's statement (with
search_path set to its schema), proxy.shard.gather.merge combines the text rows, and the result
must equal what the server answers on whole: the same columns, types, row values and text.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import psycopg
import pytest

from proxy.devstack.postgres import start_pg_cluster
from proxy.shard.gather import GatherPlan, Merged, merge, plan_gather

SHARDS = ["s0", "s1", "s2", "s3"]

QUERIES = [
    "select id, n from items order by n desc, id limit 7 offset 3",
    "select id, n from items order by n nulls first, id limit 10",
    "select id from items order by price desc nulls last, id limit 5 offset 5",
    "select * from items order by ts, id limit 6",
    "select name, id from items order by name collate \"C\", id desc limit 9 offset 1",
    "select id from items where n > 10 order by f desc, id limit 4",
    "select count(*), sum(n), min(n), max(n), avg(n) from items",
    "select count(price), sum(price), min(price), max(price), avg(price) from items",
    "select avg(big) from items",
    "select grp, count(*), sum(price), avg(n) from items group by grp order by grp collate \"C\"",
    "select grp, count(*) c from items group by grp order by c desc, grp collate \"C\" limit 3 offset 1",
    "select n, count(*) from items where n < 5 group by n order by n nulls first",
    "select grp from items group by grp order by avg(price) desc nulls last, grp collate \"C\"",
    "select min(ts), max(ts), min(f), max(f), sum(f), avg(f) from items",
    "select min(name), max(name) from items",
    "select count(*) from items where id < 0",
    "select grp, count(*), avg(price) from items group by grp having count(*) > 60 and avg(price) > 10 "
    "order by grp collate \"C\"",
    "select n from items group by n having sum(f) < 0 or max(name) >= 'b' order by n nulls first",
    "select grp from items group by grp having not min(n) = -20 order by 1",
    "select sum(n), avg(price) from items where id < 0",
]


def _rows(conn: psycopg.Connection, sql: str) -> tuple[list[tuple[str, int]], list[tuple]]:
    cur = conn.execute(sql)
    res = cur.pgresult
    assert res is not None
    cols = [(res.fname(c).decode(), res.ftype(c)) for c in range(res.nfields)]
    rows = []
    for r in range(res.ntuples):
        rows.append(tuple(None if (v := res.get_value(r, c)) is None else v.decode()
                          for c in range(res.nfields)))
    return cols, rows


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    cluster = start_pg_cluster(0, log_dir=tmp_path_factory.mktemp("shardgather"), name="shardgather")
    try:
        conn = psycopg.connect(cluster.primary.dsn, autocommit=True)
        yield from _fill(conn)
    finally:
        cluster.close()


def _fill(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    rng = random.Random(2026)
    ddl = ("(id bigint primary key, grp text, n int, price numeric(10,2), big bigint, "
           "f float8, ts timestamptz, name text)")
    for schema in SHARDS + ["whole"]:
        conn.execute(f"create schema {schema}; create table {schema}.items {ddl}")
    rows = []
    for i in range(1, 401):
        rows.append((
            i,
            rng.choice(["a", "b", "B", "c", "é", "zz"]),
            None if rng.random() < 0.1 else rng.randint(-20, 40),
            None if rng.random() < 0.15 else f"{rng.randint(-5000, 99999) / 100:.2f}",
            rng.randint(-(1 << 62), 1 << 62),
            rng.randint(-400, 400) / 4,  # quarters: float sums are exact whatever the order
            f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 1{rng.randint(0, 9)}:00:00+0{rng.randint(0, 5)}",
            "".join(rng.choice("abcXYZ é") for _ in range(rng.randint(0, 6))),
        ))
    for schema, part in [("whole", rows)] + [(s, [r for r in rows if r[0] % 4 == i]) for i, s in enumerate(SHARDS)]:
        with conn.cursor() as cur:
            cur.executemany(f"insert into {schema}.items values (%s, %s, %s, %s, %s, %s, %s, %s)", part)
    yield conn
    conn.close()


def _on(conn: psycopg.Connection, schema: str, sql: str) -> tuple[list[tuple[str, int]], list[tuple]]:
    conn.execute(f"set search_path = {schema}")
    return _rows(conn, sql)


@pytest.mark.parametrize("sql", QUERIES)
def test_merged_answer_equals_the_direct_answer(db: psycopg.Connection, sql: str) -> None:
    want_cols, want_rows = _on(db, "whole", sql)
    plan = plan_gather(sql)
    assert isinstance(plan, GatherPlan), plan
    answers = [_on(db, s, plan.sql) for s in SHARDS]
    columns = answers[0][0]
    assert all(a[0] == columns for a in answers)
    merged = merge(plan, columns, [a[1] for a in answers], c_collation=True)
    assert isinstance(merged, Merged), merged
    assert list(merged.columns) == want_cols
    if "order by" in sql:
        assert merged.rows == want_rows
    else:
        assert sorted(merged.rows, key=repr) == sorted(want_rows, key=repr)
