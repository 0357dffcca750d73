"""Scatter/gather planning and merging: rewrites, merged rows, and every refused shape.

Expected merged rows are written by hand from the shard rows given; the integration test
test_shard_gather_parity.py compares merges with what PostgreSQL computes on all the rows.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.shard.gather import GatherPlan, Merged, merge, merge_command_tags, plan_gather
from proxy.shard.keys import Param, Refuse
from proxy.shard.values import FLOAT8, INT4, INT8, NUMERIC, TEXT_OIDS, float_text, numeric_avg_text

TEXT = 25


def _plan(sql: str) -> GatherPlan:
    p = plan_gather(sql)
    assert isinstance(p, GatherPlan), p
    return p


def _merge(sql: str, columns: list[tuple[str, int]], shards: list[list[tuple]], **kw: object) -> Merged:
    m = merge(_plan(sql), columns, shards, **kw)  # type: ignore[arg-type]
    assert isinstance(m, Merged), m
    return m


def test_order_by_limit_offset_rewrite_and_merge() -> None:
    p = _plan("select id, n from t order by n desc, id limit 3 offset 2")
    assert p.sql == "SELECT id, n FROM t ORDER BY n DESC, id LIMIT 5"
    cols = [("id", INT8), ("n", INT4)]
    shards = [[("1", None), ("2", "9"), ("3", "5")], [("4", "9"), ("5", "7"), ("6", "1")]]
    m = _merge("select id, n from t order by n desc, id limit 3 offset 2", cols, shards)
    # DESC puts NULLs first: (1,NULL), (2,9), (4,9), (5,7), (3,5), (6,1); skip 2, take 3.
    assert m.rows == [("4", "9"), ("5", "7"), ("3", "5")]
    assert m.columns == (("id", INT8), ("n", INT4)) and m.tag == "SELECT 3"


def test_nulls_first_last_explicit() -> None:
    cols = [("n", INT4)]
    shards = [[("2",), (None,)], [("1",)]]
    assert _merge("select n from t order by n nulls first", cols, shards).rows == [(None,), ("1",), ("2",)]
    assert _merge("select n from t order by n desc nulls last", cols, shards).rows == [("2",), ("1",), (None,)]
    assert _merge("select n from t order by n", cols, shards).rows == [("1",), ("2",), (None,)]


def test_sort_key_not_selected_is_hidden_and_removed() -> None:
    p = _plan("select name from t order by created desc limit 2")
    assert p.sql == "SELECT name, created FROM t ORDER BY created DESC LIMIT 2" and p.hidden == 1
    cols = [("name", TEXT), ("created", 1184)]
    shards = [[("a", "2024-01-02 00:00:00+00")], [("b", "2024-01-03 00:00:00+00"), ("c", "2023-12-31 23:00:00-02")]]
    m = merge(p, cols, shards)
    assert isinstance(m, Merged)
    # 2023-12-31 23:00-02 is 2024-01-01 01:00 UTC: before a's time.
    assert m.rows == [("b",), ("a",)] and m.columns == (("name", TEXT),)


def test_star_with_hidden_sort_column() -> None:
    p = _plan("select * from t order by n limit $1 offset $2")
    assert p.sql == "SELECT *, n FROM t ORDER BY n LIMIT (CAST($1 AS int8) + CAST($2 AS int8))"
    assert p.limit == Param(1) and p.offset == Param(2)
    cols = [("id", INT8), ("n", INT4), ("n", INT4)]
    m = merge(p, cols, [[("1", "5", "5")], [("2", "3", "3"), ("3", "4", "4")]], params=[2, 1])
    assert isinstance(m, Merged) and m.rows == [("3", "4"), ("1", "5")]


def test_numeric_and_text_order() -> None:
    cols = [("v", NUMERIC)]
    shards = [[("10.5",), ("NaN",)], [("-3",), ("2.25",)]]
    assert [r[0] for r in _merge("select v from t order by v", cols, shards).rows] == ["-3", "2.25", "10.5", "NaN"]
    tcols = [("s", TEXT)]
    refused = merge(_plan("select s from t order by s"), tcols, [[("b",)], [("a",)]])
    assert isinstance(refused, Refuse) and "collation" in refused.message
    ok = _merge('select s from t order by s collate "C"', tcols, [[("b",), ("Z",)], [("a",)]])
    assert ok.rows == [("Z",), ("a",), ("b",)]


def test_aggregates_without_group_by() -> None:
    sql = "select count(*), sum(n), min(n), max(n), avg(n) from t"
    p = _plan(sql)
    assert p.sql == "SELECT count(*), sum(n), min(n), max(n), sum(n) AS avg, count(n) FROM t"
    cols = [("count", INT8), ("sum", INT8), ("min", INT4), ("max", INT4), ("avg", INT8), ("count", INT8)]
    shards = [[("2", "3", "1", "2", "3", "2")], [("1", "4", "4", "4", "4", "1")], [("0", None, None, None, None, "0")]]
    m = _merge(sql, cols, shards)
    assert m.rows == [("3", "7", "1", "4", "2.3333333333333333")]
    assert m.columns == (("count", INT8), ("sum", INT8), ("min", INT4), ("max", INT4), ("avg", NUMERIC))


def test_group_by_combines_groups_and_orders_after() -> None:
    sql = "select g, count(*) as c, sum(v) from t group by g order by c desc, g limit 2"
    p = _plan(sql)
    assert p.sql == "SELECT g, count(*) AS c, sum(v) FROM t GROUP BY g" and p.limit == 2
    cols = [("g", INT4), ("c", INT8), ("sum", NUMERIC)]
    shards = [[("1", "2", "1.50"), ("2", "1", "1")], [("2", "3", "0.5"), ("3", "1", None)], [("1", "1", "2")]]
    m = _merge(sql, cols, shards)
    assert m.rows == [("2", "4", "1.5"), ("1", "3", "3.50")]


def test_avg_in_order_by_only() -> None:
    sql = "select g from t group by g order by avg(v) desc"
    p = _plan(sql)
    assert p.sql == "SELECT g, sum(v), count(v) FROM t GROUP BY g" and p.hidden == 2
    cols = [("g", INT4), ("sum", INT8), ("count", INT8)]
    m = _merge(sql, cols, [[("1", "10", "4"), ("2", "9", "1")], [("1", "2", "1")]])
    assert m.rows == [("2",), ("1",)] and m.columns == (("g", INT4),)


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("select distinct a from t", "DISTINCT"),
        ("select distinct on (a) a, b from t", "DISTINCT"),
        ("select a, row_number() over (order by a) from t", "window function row_number()"),
        ("select a, count(*) from t group by a having count(*) between 1 and 2", "HAVING"),
        ("select a, count(*) from t group by a having count(*) > (select 1)", "neither in GROUP BY"),
        ("select count(distinct a) from t", "count(DISTINCT"),
        ("select string_agg(a, ',') from t", "aggregate string_agg()"),
        ("select sum(a) + 1 from t", "expression over aggregates"),
        ("select a, b, count(*) from t group by a", "b is neither in GROUP BY"),
        ("select a from t union select a from u", "UNION"),
        ("select * from (select a, count(*) from t group by a) s", "subquery"),
        ("select a from t where a in (select max(b) from u)", "subquery"),
        ("select a, count(*) from t group by rollup (a)", "ROLLUP"),
        ("select a from t order by a using <", "USING"),
        ("select a from t order by a fetch first 2 rows with ties", "WITH TIES"),
        ("select a from t limit 1 + 1", "LIMIT must be"),
        ("select percentile_cont(0.5) within group (order by a) from t", "percentile_cont"),
        ("insert into t values (1)", "single SELECT"),
    ],
)
def test_unmergeable_shapes_are_refused_with_why(sql: str, why: str) -> None:
    p = plan_gather(sql)
    assert isinstance(p, Refuse), p
    assert p.sqlstate == "0A000" and why in p.message, p.message


def test_avg_of_real_is_refused_at_merge() -> None:
    m = merge(_plan("select avg(r) from t"), [("avg", 700), ("count", INT8)], [[("1.5", "1")]])
    assert isinstance(m, Refuse) and "AVG" in m.message


def test_command_tags() -> None:
    assert merge_command_tags(["INSERT 0 2", "INSERT 0 3"]) == "INSERT 0 5"
    assert merge_command_tags(["UPDATE 1", "UPDATE 0", "UPDATE 4"]) == "UPDATE 5"
    assert merge_command_tags(["CREATE TABLE", "CREATE TABLE"]) == "CREATE TABLE"


@pytest.mark.parametrize(
    ("total", "count", "text"),
    [("3", 2, "1.5000000000000000"), ("7", 3, "2.3333333333333333"), ("30000", 2, "15000.000000000000"),
     ("3.75", 2, "1.8750000000000000"), ("0", 2, "0.00000000000000000000"), ("-7", 3, "-2.3333333333333333")],
)
def test_numeric_avg_text_as_postgresql_prints_it(total: str, count: int, text: str) -> None:
    from decimal import Decimal

    assert numeric_avg_text(Decimal(total), count) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1 + 0.2, "0.30000000000000004"), (1e15, "1e+15"), (123456789012345.0, "123456789012345"),
     (1e-5, "1e-05"), (0.0001, "0.0001"), (3.0, "3"), (-0.0, "-0"), (1.5e300, "1.5e+300"),
     (float("inf"), "Infinity"), (float("nan"), "NaN"), (-2.5, "-2.5")],
)
def test_float8_text_as_postgresql_prints_it(value: float, text: str) -> None:
    assert float_text(value, FLOAT8) == text


@given(st.lists(st.lists(st.one_of(st.none(), st.integers(-50, 50)), max_size=8), min_size=1, max_size=4),
       st.integers(0, 5), st.one_of(st.none(), st.integers(0, 10)), st.booleans())
def test_merged_order_limit_equals_sorting_everything(shards: list[list[int | None]], offset: int,
                                                       limit: int | None, desc: bool) -> None:
    sql = f"select n from t order by n {'desc' if desc else 'asc'}" + (
        f" limit {limit}" if limit is not None else "") + f" offset {offset}"
    rows = [[(None if v is None else str(v),) for v in s] for s in shards]
    m = _merge(sql, [("n", INT4)], rows)
    everything = [v for s in shards for v in s]
    nonnull = sorted((v for v in everything if v is not None), reverse=desc)
    nulls = [None] * (len(everything) - len(nonnull))
    ordered = nulls + nonnull if desc else nonnull + nulls
    want = ordered[offset:] if limit is None else ordered[offset : offset + limit]
    assert [None if r[0] is None else int(r[0]) for r in m.rows] == want


def test_text_oids_cover_the_string_types() -> None:
    assert {25, 1043, 1042, 19} <= TEXT_OIDS


def test_character_n_orders_without_padding() -> None:
    # 'a' (padded to 'a  ') sorts before 'a\t' in PostgreSQL: bpchar compares without its padding.
    m = _merge('select c from t order by c collate "C"', [("c", 1042)], [[("a\t ",)], [("a  ",)]])
    assert m.rows == [("a  ",), ("a\t ",)]


def test_having_applies_to_the_combined_groups() -> None:
    sql = "select g, count(*) from t group by g having count(*) > 2 and avg(v) < 5.5 order by g"
    p = _plan(sql)
    assert p.sql == "SELECT g, count(*), sum(v), count(v) FROM t GROUP BY g"
    cols = [("g", INT4), ("count", INT8), ("sum", INT8), ("count", INT8)]
    # g=1: 3 rows, avg 5; g=2: 3 rows, avg 6; g=3: 2 rows. Each shard alone has < 3 rows per group.
    shards = [[("1", "2", "8", "2"), ("2", "1", "6", "1"), ("3", "1", "1", "1")],
              [("1", "1", "7", "1"), ("2", "2", "12", "2"), ("3", "1", "1", "1")]]
    m = _merge(sql, cols, shards)
    assert m.rows == [("1", "3")]


def test_having_three_valued_logic_and_text() -> None:
    cols = [("g", INT4), ("max", TEXT)]
    shards = [[("1", "b"), ("2", None)], [("1", "a"), ("3", "z")]]
    m = _merge("select g from t group by g having not max(s) = 'b'", cols, shards, c_collation=True)
    assert m.rows == [("3",)]  # g=2: max is NULL, NOT NULL is NULL: dropped
    refused = merge(_plan("select g from t group by g having max(s) > 'a'"), cols, shards)
    assert isinstance(refused, Refuse) and "collation" in refused.message


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float8_text_round_trips(value: float) -> None:
    text = float_text(value, FLOAT8)
    assert float(text) == value
    assert not text.endswith(".0") and "E" not in text


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float4_text_round_trips_through_float4(value: float) -> None:
    import struct

    text = float_text(value, 700)
    assert struct.unpack(">f", struct.pack(">f", float(text)))[0] == value


@given(st.decimals(min_value=-10**12, max_value=10**12, places=3, allow_nan=False), st.integers(1, 10**6))
def test_numeric_avg_text_is_the_rounded_quotient(total: object, count: int) -> None:
    from decimal import Decimal, localcontext

    text = numeric_avg_text(total, count)  # type: ignore[arg-type]
    scale = len(text.partition(".")[2])
    assert scale >= 3  # never fewer decimals than the sum's own (numeric_div's rscale >= dscale)
    digits = text.lstrip("-").replace(".", "").lstrip("0")
    assert len(digits) >= 16 or Decimal(text) == 0  # NUMERIC_MIN_SIG_DIGITS
    with localcontext() as ctx:
        ctx.prec = 100
        exact = Decimal(total) / count  # type: ignore[arg-type]
        assert abs(Decimal(text) - exact) <= Decimal(1).scaleb(-scale) / 2
