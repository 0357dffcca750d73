"""Shard key extraction and plans: WHERE/IN/params/INSERT split/SET/comments, and refusals.

Expected shards come from a `ModuloMap` over four shards (key % 4 is easy to check by hand), so
the expectations below are written from the statements, not from the code under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import parse_sql

from proxy.shard.keys import (
    All,
    GroupSpec,
    One,
    Param,
    Refuse,
    Session,
    SetKey,
    Some,
    analyze,
    decode_param,
    plan,
    plan_sql,
)
from proxy.shard.maps import INT8_MAX, INT8_MIN, DedicatedMap, KeyTypeError, ModuloMap, RangeMap

USERS = GroupSpec("users", frozenset({"users", "orders"}), "user_id", "integer")
TENANTS = GroupSpec("tenants", frozenset({"app.tenants"}), "tenant", "text")
GROUPS = [USERS, TENANTS]
SPECS = {g.name: g for g in GROUPS}
SHARDS = ("s0", "s1", "s2", "s3")
MAPS = {"users": ModuloMap(SHARDS), "tenants": RangeMap(("s0", "s1"), ("m",))}


def route(sql: str, **kw: object) -> object:
    return plan(analyze(sql, GROUPS, SHARDS), MAPS, SPECS, all_shards=SHARDS, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "shard"),
    [
        ("select * from users where user_id = 5", "s1"),
        ("select * from users where 6 = user_id", "s2"),
        ("select * from users u where u.user_id = '7'::bigint and name = 'x'", "s3"),
        ("select * from public.users where user_id = -1", "s3"),  # floor modulo: -1 -> 3
        ("update users set name = 'a' where user_id = 8", "s0"),
        ("delete from orders where user_id = 9 and id = 3", "s1"),
        ("select * from users where user_id in (1, 5, 9)", "s1"),
        ("select * from users where user_id = 2 or user_id = 6", "s2"),
        ("select * from app.tenants where tenant = 'acme'", "s0"),
        ("select * from tenants where tenant = 'zeta'", "s1"),
        (f"select * from users where user_id = {INT8_MAX}", "s3"),
        (f"select * from users where user_id = {INT8_MIN}", "s0"),
        ("select * from users u join orders o on u.user_id = o.user_id where u.user_id = 3", "s3"),
        ("select * from users join orders using (user_id) where user_id = 4", "s0"),
        ("select 1", "s0"),
        ("select * from users where user_id = any(array[1, 5])", "s1"),
        ("explain analyze select * from users where user_id = 5", "s1"),
        ("select * from users where user_id = 5 and user_id in (select user_id from orders where t > 1)", "s1"),
        ("select * from users u where u.user_id in (select o.user_id from orders o) and u.user_id = 2", "s2"),
        ("explain insert into users (user_id) values (6)", "s2"),
        ("select * from users u join plain p on true where p.user_id = 2 and u.user_id = 7", "s3"),
    ],
)
def test_one_shard(sql: str, shard: str) -> None:
    p = route(sql)
    assert isinstance(p, One), p
    assert p.shard == shard and p.sql == sql


def test_a_column_of_a_table_in_no_group_is_not_the_key() -> None:
    sql = "select * from users u join plain p on true where p.user_id = 2"
    assert isinstance(route(sql), All)


def test_in_list_spanning_shards_goes_to_exactly_those_shards() -> None:
    p = route("select * from users where user_id in (1, 2, 5, 3, 7)")
    assert isinstance(p, Some)
    assert [s for s, _ in p.parts] == ["s1", "s2", "s3"]


def test_parameters_are_resolved_at_bind() -> None:
    a = analyze("select * from users where user_id = $2 and name = $1", GROUPS)
    assert a.kind == "keyed" and a.keys == (Param(2),)
    p = plan(a, MAPS, SPECS, params=["x", 10])
    assert isinstance(p, One) and p.shard == "s2"
    p = plan(analyze("select * from users where user_id in ($1, $2)", GROUPS), MAPS, SPECS, params=[1, 2])
    assert isinstance(p, Some) and [s for s, _ in p.parts] == ["s1", "s2"]
    missing = plan(a, MAPS, SPECS, params=[1])
    assert isinstance(missing, Refuse) and missing.sqlstate == "42P02"


def test_null_key_matches_no_row() -> None:
    p = plan(analyze("select * from users where user_id = $1", GROUPS), MAPS, SPECS, params=[None])
    assert isinstance(p, One)


def test_multi_row_insert_is_split_by_shard() -> None:
    sql = "INSERT INTO users (name, user_id) VALUES ('a', 1), ('b', 2), ('c', 5), ('d', 4) RETURNING user_id"
    p = route(sql)
    assert isinstance(p, Some)
    parts = dict(p.parts)
    assert list(parts) == ["s0", "s1", "s2"]
    # Each part is an INSERT with exactly that shard's rows, in their order.
    for shard, rows in {"s0": [("d", 4)], "s1": [("a", 1), ("c", 5)], "s2": [("b", 2)]}.items():
        stmt = parse_sql(parts[shard])[0].stmt
        got = [(r[0].val.sval, r[1].val.ival) for r in stmt.selectStmt.valuesLists]
        assert got == rows
        assert stmt.returningClause is not None


def test_insert_rows_of_one_shard_keep_the_text() -> None:
    sql = "insert into users (user_id, name) values (1, 'a'), (5, 'b')"
    p = route(sql)
    assert isinstance(p, One) and p.shard == "s1" and p.sql == sql


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("insert into users values (1, 'a')", "0A000", "must name its columns"),
        ("insert into users (name) values ('a')", "0A000", "shard key user_id"),
        ("insert into users (user_id) select 1", "0A000", "INSERT ... SELECT"),
        ("insert into users (user_id) values (1 + 1)", "0A000", "constant or a parameter"),
        ("insert into users (user_id) values (null)", "22004", "NULL"),
        ("update users set user_id = 2 where user_id = 1", "0A000", "UPDATE of the shard key"),
        ("select * from users join app.tenants on true where user_id = 1", "0A000", "groups tenants and users"),
        ("select * from users u join orders o on u.id = o.id where u.user_id = 1", "0A000", "not on the shard key"),
        ("select * from users where user_id = 1 and id in (select id from orders)", "0A000", "not on the shard key"),
        ("select * from users where user_id = 'abc'", "22P02", "integer"),
        (f"select * from users where user_id = {INT8_MAX + 1}", "22P02", "out of range"),
        ("/* tierproxy:shard=nope */ select 1", "42704", "no shard named 'nope'"),
        ("selec 1", "42601", "syntax"),
        ("with x as (insert into users (user_id) values (1) returning *) select * from x", "0A000",
         "data-modifying WITH"),
        ("with d as (delete from orders where user_id = 1) select * from users where user_id = 2", "0A000",
         "data-modifying WITH"),
        ("merge into users u using v on u.user_id = v.id when not matched then insert values (1)", "0A000",
         "MERGE"),
        ("copy users from stdin", "0A000", "COPY FROM"),
        ("explain analyze insert into users (user_id) values (1), (2)", "0A000", "EXPLAIN of a multi-row"),
    ],
)
def test_refusals_name_why(sql: str, sqlstate: str, words: str) -> None:
    p = route(sql)
    assert isinstance(p, Refuse), p
    assert p.sqlstate == sqlstate and words in p.message, p


def test_multi_row_insert_with_parameters_across_shards_is_refused() -> None:
    a = analyze("insert into users (user_id) values ($1), ($2)", GROUPS)
    assert isinstance(plan(a, MAPS, SPECS, params=[1, 5]), One)
    p = plan(a, MAPS, SPECS, params=[1, 2])
    assert isinstance(p, Refuse) and p.sqlstate == "0A000"


def test_keyless_scatters_or_is_denied() -> None:
    sql = "select count(*) from users where name = 'x'"
    assert route(sql) == All(sql, "no shard key")
    denied = route(sql, scatter="deny")
    assert isinstance(denied, Refuse) and "scatter" in denied.message
    assert isinstance(route("create table t (a int)"), All) and route("create table t (a int)").ddl  # type: ignore[union-attr]


def test_comments_and_session_key() -> None:
    p = route("/* tierproxy:shard_key=6 */ select * from users where name = 'x'")
    assert isinstance(p, One) and p.shard == "s2"
    p = route("/* tierproxy:shard=s3 */ select * from users")
    assert isinstance(p, One) and p.shard == "s3"
    p = route("/* tierproxy:shard_key='zed' */ select * from app.tenants")
    assert isinstance(p, One) and p.shard == "s1"
    assert route("set tierproxy.shard_key = 42") == SetKey("42")
    assert route("SET tierproxy.shard_key TO 'abc'") == SetKey("abc")
    assert route("reset tierproxy.shard_key") == SetKey(None)
    p = route("select * from users where name = 'x'", session_key="7")
    assert isinstance(p, One) and p.shard == "s3"
    # The statement's own key wins over the session's.
    p = route("select * from users where user_id = 4", session_key="7")
    assert isinstance(p, One) and p.shard == "s0"
    assert route("begin") == Session("begin")
    assert route("START TRANSACTION READ ONLY") == Session("start")
    assert route("commit") == Session("commit") and route("end") == Session("commit")
    assert route("rollback to savepoint a") == Session("rollback_to")
    assert route("set search_path = a") == Session("set")
    assert route("execute stmt(1)") == Session("execute")
    assert isinstance(route("copy users to stdout"), All)


def test_dedicated_keys_route_through_the_map() -> None:
    maps = {**MAPS, "users": DedicatedMap(ModuloMap(SHARDS), {42: "hot"})}
    p = plan(analyze("select * from users where user_id = 42", GROUPS), maps, SPECS)
    assert isinstance(p, One) and p.shard == "hot"


def test_multi_statement_strings() -> None:
    p = plan_sql("select * from users where user_id = 1; update users set a = 1 where user_id = 5",
                 GROUPS, MAPS, all_shards=SHARDS)
    assert isinstance(p, One) and p.shard == "s1"
    p = plan_sql("select * from users where user_id = 1; select * from users where user_id = 2",
                 GROUPS, MAPS, all_shards=SHARDS)
    assert isinstance(p, Refuse) and p.sqlstate == "0A000"
    p = plan_sql("select now(); begin; select * from users where user_id = 6; commit", GROUPS, MAPS,
                 all_shards=SHARDS)
    assert isinstance(p, One) and p.shard == "s2"
    p = plan_sql("create table a (x int); create index on a (x)", GROUPS, MAPS, all_shards=SHARDS)
    assert isinstance(p, All) and p.ddl
    p = plan_sql("create table a (x int); select * from users where user_id = 1", GROUPS, MAPS,
                 all_shards=SHARDS)
    assert isinstance(p, Refuse)


@given(st.integers(min_value=INT8_MIN, max_value=INT8_MAX))
def test_int_params_decode_in_every_format(key: int) -> None:
    assert decode_param(str(key).encode(), 0, 20, "integer") == key
    assert decode_param(struct.pack(">q", key), 1, 20, "integer") == key
    if -(1 << 31) <= key < 1 << 31:
        assert decode_param(struct.pack(">i", key), 1, 23, "integer") == key
    if -(1 << 15) <= key < 1 << 15:
        assert decode_param(struct.pack(">h", key), 1, 21, "integer") == key


@given(st.text())
def test_text_params_decode(key: str) -> None:
    assert decode_param(key.encode(), 0, 25, "text") == key
    assert decode_param(key.encode(), 1, 25, "text") == key


def test_bad_params_are_refused() -> None:
    for value, fmt, oid in [(b"abc", 0, 20), (b"\x00\x01", 1, 20), (b"\xff", 0, 25), (b"x", 1, 700)]:
        with pytest.raises(KeyTypeError):
            decode_param(value, fmt, oid, "integer")
    assert decode_param(None, 0, 20, "integer") is None


@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=20))
def test_insert_split_keeps_every_row_once_on_its_shard(keys: list[int]) -> None:
    sql = "insert into users (user_id, n) values " + ", ".join(f"({k}, {i})" for i, k in enumerate(keys))
    p = route(sql)
    parts = [(p.shard, p.sql)] if isinstance(p, One) else list(p.parts)  # type: ignore[union-attr]
    seen = []
    for shard, text in parts:
        for row in parse_sql(text)[0].stmt.selectStmt.valuesLists:
            key, n = row[0].val.ival, row[1].val.ival
            assert SHARDS[key % 4] == shard
            seen.append(n)
    assert sorted(seen) == list(range(len(keys)))


@given(st.lists(st.integers(min_value=INT8_MIN, max_value=INT8_MAX), min_size=1, max_size=10))
def test_in_list_goes_to_exactly_the_keys_shards(keys: list[int]) -> None:
    p = route("select * from users where user_id in (" + ", ".join(map(str, keys)) + ")")
    want = {SHARDS[k % 4] for k in keys}
    got = {p.shard} if isinstance(p, One) else {s for s, _ in p.parts}  # type: ignore[union-attr]
    assert got == want


def test_shard_key_comment_on_a_statement_without_a_sharded_table() -> None:
    # Two groups: which one the key belongs to is unknown.
    p = route("/* tierproxy:shard_key=6 */ select now()")
    assert isinstance(p, Refuse) and p.sqlstate == "0A000" and "tierproxy:shard=NAME" in p.message
    one = {"users": MAPS["users"]}
    p = plan(analyze("/* tierproxy:shard_key=6 */ select now()", [USERS]), one, SPECS)
    assert isinstance(p, One) and p.shard == "s2"
    p = plan(analyze("/* tierproxy:shard_key=6 */ select * from plain_table", [USERS]), one, SPECS)
    assert isinstance(p, One) and p.shard == "s2"


_WORDS = st.sampled_from([
    "select", "*", "from", "users", "orders", "app.tenants", "where", "user_id", "tenant", "=", "in",
    "(", ")", ",", "1", "-5", "'x'", "$1", "$2", "and", "or", "not", "join", "on", "u", "o", "u.user_id",
    "o.user_id", "insert", "into", "values", "update", "set", "delete", "returning", "with", "as",
    "order", "by", "limit", "group", "count(*)", "sum(n)", "avg(n)", "distinct", "union", "null",
    "/* tierproxy:shard_key=3 */", "/* tierproxy:shard=s1 */", "begin", "commit", "explain",
])


@given(st.one_of(st.text(max_size=80), st.lists(_WORDS, max_size=25).map(" ".join)),
       st.lists(st.one_of(st.none(), st.integers(-10, 10), st.text(max_size=5)), max_size=3))
def test_any_text_gives_a_plan_never_an_exception(sql: str, params: list) -> None:
    from proxy.shard.gather import plan_gather

    p = plan(analyze(sql, GROUPS, SHARDS), MAPS, SPECS, params=params, all_shards=SHARDS)
    assert isinstance(p, One | Some | All | Refuse | Session | SetKey)
    plan_gather(sql)


def test_key_ranges_on_a_range_map_go_to_the_overlapping_shards() -> None:
    ranged = {**MAPS, "users": RangeMap(SHARDS, (100, 200, 300))}
    def go(sql: str) -> object:
        return plan(analyze(sql, GROUPS, SHARDS), ranged, SPECS, all_shards=SHARDS)
    p = go("select * from users where user_id >= 120 and user_id < 150")
    assert isinstance(p, One) and p.shard == "s1"
    p = go("select * from users where user_id between 150 and 250 and name = 'x'")
    assert isinstance(p, Some) and [s for s, _ in p.parts] == ["s1", "s2"]
    p = go("select count(*) from users where 250 < user_id")
    assert isinstance(p, Some) and [s for s, _ in p.parts] == ["s2", "s3"]
    assert isinstance(go("select * from users where user_id > 5 or user_id < 1"), All)
    p = route("select * from app.tenants where tenant between 'a' and 'c'")
    assert isinstance(p, One) and p.shard == "s0"
    # modulo, hash and consistent maps scatter key ranges
    assert isinstance(route("select * from users where user_id between 1 and 3"), All)
