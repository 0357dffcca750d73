"""Statements for several shards over the extended protocol (asyncpg, psycopg), through
`tierproxy shard` on four real PostgreSQL shards: scatter/gather, IN lists and ANY over shards,
split multi-row INSERTs with parameters, executemany over shards, binary results.

Expected answers are computed here from rows read directly on the shards (asyncpg decodes the
server's own binary values), never by the router's code; binvalues' encoding is checked against
the server's `*_send` functions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import random
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.devstack.shard import ShardRouterServer
from proxy.shard.binvalues import to_binary

from . import test_shard_daemon as base
from .test_shard_daemon import DEDICATED, Shards, expected_shard

shards = base.shards  # the module's fixtures: four shards and the router over them
router = base.router

TYPED = """create table typed (k int primary key, i2 int2, i8 int8, num numeric, f8 float8, f4 real,
 ts timestamp, tz timestamptz, d date, t time, ok bool, u uuid, b bytea, j jsonb, js json, name text,
 ch varchar(10))"""


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def clean(shards: Shards) -> Iterator[Shards]:
    shards.truncate()
    yield shards


def _fill(router: ShardRouterServer, keys: list[int]) -> None:
    with psycopg.connect(router.dsn(), autocommit=True) as c:
        c.execute("INSERT INTO users (user_id, name) VALUES " + ", ".join(f"({k}, 'n{k % 5}')" for k in keys))


def test_asyncpg_scatter_order_limit_aggregates_in_binary(router: ShardRouterServer, clean: Shards) -> None:
    rng = random.Random(11)
    keys = rng.sample(range(-5000, 5000), 120)
    _fill(router, keys)
    direct = clean.all_rows()
    assert len(direct) == 120

    async def go() -> None:
        c = await asyncpg.connect(router.dsn())
        try:
            got = await c.fetch("SELECT user_id, name FROM users ORDER BY user_id DESC LIMIT 10")
            assert [tuple(r) for r in got] == sorted(direct, reverse=True)[:10]
            got = await c.fetch("SELECT user_id FROM users ORDER BY user_id LIMIT $1 OFFSET $2", 7, 3)
            assert [r[0] for r in got] == sorted(keys)[3:10]
            pick = rng.sample(keys, 9)
            got = await c.fetch("SELECT user_id, name FROM users WHERE user_id = ANY($1) ORDER BY user_id", pick)
            assert [tuple(r) for r in got] == sorted((k, f"n{k % 5}") for k in pick)
            got = await c.fetch("SELECT name FROM users WHERE user_id IN ($1, $2, $3)", *pick[:3])
            assert sorted(r[0] for r in got) == sorted(f"n{k % 5}" for k in pick[:3])
            row = await c.fetchrow("SELECT count(*), sum(user_id), min(user_id), max(user_id), avg(user_id) FROM users")
            assert row[:4] == (120, sum(keys), min(keys), max(keys))
            assert row[4] == (decimal.Decimal(sum(keys)) / 120).quantize(row[4])
            got = await c.fetch('SELECT name, count(*) AS n, sum(user_id) FROM users GROUP BY name '
                                'ORDER BY name COLLATE "C"')
            groups: dict[str, list[int]] = {}
            for k, n in direct:
                groups.setdefault(n, []).append(k)
            assert [tuple(r) for r in got] == [(n, len(v), sum(v)) for n, v in sorted(groups.items())]
            # The same statement prepared once, bound many times (asyncpg's statement cache).
            stmt = await c.prepare("SELECT count(*) FROM users WHERE user_id > $1")
            for lo in (-6000, 0, 2500):
                assert await stmt.fetchval(lo) == sum(1 for k in keys if k > lo)
            # Refused, not answered wrong; the connection goes on.
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="collation"):
                await c.fetch("SELECT name FROM users ORDER BY name LIMIT 3")
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="DISTINCT"):
                await c.fetch("SELECT DISTINCT name FROM users")
            assert await c.fetchval("SELECT count(*) FROM users WHERE name = $1", "n1") == \
                sum(1 for k in keys if k % 5 == 1)
        finally:
            await c.close()

    _run(go())


def test_split_insert_with_parameters_and_executemany(router: ShardRouterServer, clean: Shards) -> None:
    async def go() -> None:
        c = await asyncpg.connect(router.dsn())
        try:
            status = await c.execute("INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, $4), ($5, $6)",
                                     1, "a", 2, "b", 7, "c")
            assert status == "INSERT 0 3"
            rows = await c.fetch("INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, upper($2)) "
                                 "RETURNING user_id, name", 12, "x", 13)
            assert sorted(tuple(r) for r in rows) == [(12, "x"), (13, "X")]
            await c.executemany("INSERT INTO users (user_id, name) VALUES ($1, $2)",
                                [(k, f"e{k}") for k in range(100, 140)] + [(DEDICATED, "dd")])
            with pytest.raises(asyncpg.UniqueViolationError, match="shard s"):
                await c.executemany("INSERT INTO users (user_id, name) VALUES ($1, $2)", [(201, "z"), (100, "dup")])
            assert await c.fetchval("SELECT name FROM users WHERE user_id = $1", 13) == "X"
        finally:
            await c.close()

    _run(go())
    for k in (1, 2, 7, 12, 13, DEDICATED, *range(100, 140)):
        assert clean.where(k) == [expected_shard(k)], k
    assert sorted(clean.all_rows())[:3] == [(1, "a"), (2, "b"), (7, "c")]


def test_psycopg_scatter_describe_and_binary_cursor(router: ShardRouterServer, clean: Shards) -> None:
    keys = list(range(1, 41))
    _fill(router, keys)
    direct = psycopg.connect(clean.clusters[0].primary.dsn, autocommit=True)
    with psycopg.connect(router.dsn(), autocommit=True) as c, direct:
        sql = "SELECT name, count(*) AS n, avg(user_id) AS a, max(user_id) FROM users WHERE user_id > %s GROUP BY name ORDER BY n DESC, name COLLATE \"C\""
        cur = c.execute(sql, (0,))
        want = direct.execute(sql, (0,))  # the same shape direct (on one shard's rows)
        assert [(d.name, d.type_code) for d in cur.description] == [(d.name, d.type_code) for d in want.description]
        groups: dict[str, list[int]] = {}
        for k in keys:
            groups.setdefault(f"n{k % 5}", []).append(k)
        assert cur.fetchall() == sorted(((n, len(v), decimal.Decimal(sum(v)) / len(v), max(v))
                                         for n, v in groups.items()), key=lambda r: (-r[1], r[0]))
        with c.cursor(binary=True) as bc:
            bc.execute("SELECT user_id, name FROM users WHERE user_id <> %s ORDER BY user_id LIMIT 5", (3,))
            assert bc.fetchall() == [(k, f"n{k % 5}") for k in (1, 2, 4, 5, 6)]
        # psycopg's own prepared statements (after 5 runs) of a scatter statement
        for _ in range(7):
            assert c.execute("SELECT count(*) FROM users WHERE name = %s", ("n2",)).fetchone() == (8,)
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("SELECT user_id, rank() OVER (ORDER BY user_id) FROM users WHERE name = %s", ("n1",))
        assert c.execute("SELECT 1").fetchone() == (1,)


VALUES: list[dict[str, Any]] = []


def _typed_rows(n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(3)
    out = []
    for k in range(n):
        out.append((k, rng.randint(-32768, 32767), rng.randint(-(2**63), 2**63 - 1),
                    decimal.Decimal(rng.choice(["0", "-0.00", "1.5", "123456789.000100", "-0.0001", "1e20", "NaN"]))
                    if k % 7 else decimal.Decimal(rng.randint(-10**30, 10**30)) / 10**rng.randint(0, 12),
                    rng.choice([0.1, -2.5e300, float("inf"), 3.0, -0.0]), rng.choice([1.5, 0.1, -3e30]),
                    dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=rng.randint(-(10**16), 10**16)),
                    dt.datetime(1990, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=rng.randint(-12, 12))))
                    + dt.timedelta(microseconds=rng.randint(0, 10**15)),
                    dt.date(1, 1, 1) + dt.timedelta(days=rng.randint(0, 3_000_000)),
                    dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)),
                    rng.choice([True, False]), uuid.UUID(int=rng.getrandbits(128)), rng.randbytes(rng.randint(0, 9)),
                    '{"a": [1, 2]}', '{"b":  "ü"}', rng.choice(["x", "ü", "", "zz"]), "v" * rng.randint(0, 10)))
    return out


def test_binary_results_of_merged_rows_equal_direct_for_many_types(router: ShardRouterServer, shards: Shards) -> None:
    rows = _typed_rows(60)

    async def go() -> None:
        directs = [await asyncpg.connect(c.primary.dsn) for c in shards.clusters]
        try:
            for i, d in enumerate(directs):
                await d.execute("drop table if exists typed")
                await d.execute(TYPED)
                await d.copy_records_to_table("typed", records=[r for r in rows if r[0] % 4 == i])
            want = sorted([_norm(r) for d in directs for r in await d.fetch("select * from typed")])
            c = await asyncpg.connect(router.dsn())
            try:
                got = await c.fetch("SELECT * FROM typed ORDER BY k")
                assert [_norm(r) for r in got] == want
                got = await c.fetch("SELECT * FROM typed WHERE k >= $1 ORDER BY ts DESC, k LIMIT 20", 3)
                assert [_norm(r) for r in got] == sorted((r for r in want if r[0] >= 3), key=lambda r: (-_us(r[6]), r[0]))[:20]
                agg = await c.fetchrow("SELECT min(i8), max(num), min(tz), max(d), sum(num), sum(i2), count(u), "
                                       "max(f8), min(ts), avg(f8) FROM typed WHERE k > $1", 0)
                part = [r for r in want if r[0] > 0]
                nums = [decimal.Decimal(r[3]) for r in part]
                finite = [x for x in nums if not x.is_nan()]
                assert agg[0] == min(r[2] for r in part)
                assert agg[1].is_nan() == any(x.is_nan() for x in nums)
                assert agg[2] == min(r[7] for r in part) and agg[3] == max(r[8] for r in part)
                assert agg[5] == sum(r[1] for r in part) and agg[6] == len(part)
                assert agg[7] == max(r[4] for r in part) and agg[8] == min(r[6] for r in part)
                assert finite  # the NaN case makes sum(num) NaN
                assert agg[4].is_nan() == any(x.is_nan() for x in nums)
                with pytest.raises(asyncpg.FeatureNotSupportedError, match="binary"):
                    await c.fetch("SELECT k, interval '1 day' * k AS iv FROM typed ORDER BY k LIMIT 2")
                assert await c.fetchval("SELECT count(*) FROM typed") == 60
            finally:
                await c.close()
        finally:
            for d in directs:
                await d.execute("drop table if exists typed")
                await d.close()

    _run(go())


def _norm(r: Any) -> tuple[Any, ...]:
    """A row with numeric NaN as text (Decimal NaN is not equal to itself)."""
    return tuple("NaN" if isinstance(v, decimal.Decimal) and v.is_nan() else v for v in r)


def _us(x: dt.datetime) -> int:
    return (x - dt.datetime(2000, 1, 1)) // dt.timedelta(microseconds=1)


_SEND = {
    "int2": "int2send", "int4": "int4send", "int8": "int8send", "numeric": "numeric_send",
    "float8": "float8send", "float4": "float4send", "timestamp": "timestamp_send",
    "timestamptz": "timestamptz_send", "date": "date_send", "time": "time_send", "bool": "boolsend",
    "uuid": "uuid_send", "bytea": "byteasend", "jsonb": "jsonb_send", "text": "textsend", "oid": "oidsend",
    '"char"': "charsend",
}
_OIDS = {"int2": 21, "int4": 23, "int8": 20, "numeric": 1700, "float8": 701, "float4": 700, "timestamp": 1114,
         "timestamptz": 1184, "date": 1082, "time": 1083, "bool": 16, "uuid": 2950, "bytea": 17, "jsonb": 3802,
         "text": 25, "oid": 26, '"char"': 18}

_values = st.one_of(
    st.tuples(st.just("int2"), st.integers(-(2**15), 2**15 - 1).map(str)),
    st.tuples(st.just("int4"), st.integers(-(2**31), 2**31 - 1).map(str)),
    st.tuples(st.just("int8"), st.integers(-(2**63), 2**63 - 1).map(str)),
    st.tuples(st.just("oid"), st.integers(0, 2**32 - 1).map(str)),
    st.tuples(st.just("numeric"), st.decimals(allow_nan=True, allow_infinity=False, places=None)
              .map(lambda d: "NaN" if d.is_nan() else format(d, "f"))),
    st.tuples(st.just("numeric"), st.sampled_from(["Infinity", "-Infinity", "0.000", "-0", "10000", "0.0001",
                                                   "99999999.99999999"])),
    st.tuples(st.just("float8"), st.floats(allow_nan=True).map(repr).map(
        lambda r: {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}.get(r, r))),
    st.tuples(st.just("float4"), st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr)),
    st.tuples(st.just("timestamp"), st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)).map(str)),
    st.tuples(st.just("timestamptz"), st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31)).map(lambda x: f"{x}+00")),
    st.tuples(st.just("date"), st.dates().map(str)),
    st.tuples(st.just("time"), st.times().map(str)),
    st.tuples(st.just("bool"), st.sampled_from(["t", "f"])),
    st.tuples(st.just("uuid"), st.uuids().map(str)),
    st.tuples(st.just("bytea"), st.binary(max_size=20).map(lambda b: "\\x" + b.hex())),
    st.tuples(st.just("jsonb"), st.sampled_from(['{"a": 1}', '[1, "x", null]', '"ü"', "3.5"])),
    st.tuples(st.just("text"), st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1))),
    st.tuples(st.just('"char"'), st.sampled_from(["a", "Z", " "])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(_values, min_size=1, max_size=25))
def test_binary_encoding_equals_the_servers_send_functions(shards: Shards, batch: list[tuple[str, str]]) -> None:
    conn = shards.conns["s0"]
    for typ, literal in batch:
        cur = conn.execute(f"SELECT %s::{typ}, {_SEND[typ]}(%s::{typ})", (literal, literal))
        assert cur.pgresult is not None
        text = bytes(cur.pgresult.get_value(0, 0) or b"").decode()  # the type's output function, as on the wire
        sent = cur.fetchone()[1]  # type: ignore[index]
        assert to_binary(_OIDS[typ], text) == bytes(sent), (typ, literal, text)
