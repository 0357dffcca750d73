"""The shape cache (proxy.shard.shape, ShardRouter): a plan from a cached shape equals the plan of
a fresh full analysis of the statement's own text, for generated statements of every kind; the
lexer finds the literals PostgreSQL's own lexer (pglast.parser.scan) finds.

Expected plans come from keys.plan_sql / keys.analyze on the original text, with no cache: the
code the shape cache must agree with, not the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import ParseError, scan

from proxy.core.config import load_config
from proxy.shard.config import ShardConfig
from proxy.shard.keys import One, Some, analyze, plan, plan_sql
from proxy.shard.router import ShardRouter
from proxy.shard.shape import lex

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config" / "shard.toml"
CONFIG = load_config(EXAMPLE, ShardConfig)  # users: hash + dedicated 42; tenants: text; events: range


def fresh_query_plan(r: ShardRouter, sql: str, session_key: str | None = None) -> object:
    return plan_sql(sql, r.groups, r.maps, session_key=session_key, scatter=r.config.scatter,
                    all_shards=r.shards)


def fresh_plan(r: ShardRouter, sql: str, session_key: str | None = None, analysis: object = None) -> object:
    """`analysis`: analyze(sql, ...) when the caller has it already (the same, made once)."""
    analysis = analyze(sql, r.groups, r.shards) if analysis is None else analysis
    return plan(analysis, r.maps, r.specs, session_key=session_key, scatter=r.config.scatter, all_shards=r.shards)


# --- generated statements -------------------------------------------------------------------------

_INT = st.one_of(st.integers(-5, 60), st.integers(-2**63 - 3, 2**63 + 3),
                 st.sampled_from([42, 2**31 - 1, 2**31, -2**31, 0]))


def _number(n: int) -> str:
    return str(n)


_KEY_TEXT = st.one_of(
    _INT.map(str),  # 42, -7 (the minus folded into the constant)
    _INT.map(lambda n: f"- {abs(n)}"),  # unary minus with a space
    _INT.map(lambda n: f"'{n}'"),  # a string key for an integer column
    _INT.map(lambda n: f"'{n}'::bigint"),
    _INT.map(lambda n: f"{abs(n)}::int8"),
    st.sampled_from(["007", "1.5", "1e3", "'x'", "' 12 '", "'4''2'", "null", "E'42'", "$$42$$",
                     "'1' || '2'", "1 + 1", "(42)", "'42'::text::bigint", "E'4\\'2'", "'a\\b'",
                     "99999999999999999999", "0x2A", "1_000"]),
)
_TEXT = st.one_of(
    st.text(alphabet="ab'\\-/*$ é;\n", max_size=6).map(lambda s: "'" + s.replace("'", "''") + "'"),
    st.sampled_from(["'acme'", "'it''s'", "'a--b'", "'/* x */'", "'$$'", "E'a\\'b'", "$t$x'y$t$",
                     "'zeta'", "42", "U&'d\\0061t'", "'a'\n'b'", "N'acme'"]),
)


@st.composite
def statements(draw: st.DrawFn, family: int, n: int) -> str:
    def k() -> str:
        return draw(_KEY_TEXT)

    def t() -> str:
        return draw(_TEXT)

    if family == 0:
        sql = f"SELECT name FROM users WHERE user_id = {k()}"
    elif family == 1:
        sql = f"select * from users where user_id in ({', '.join(k() for _ in range(n))}) order by 1 limit 5"
    elif family == 2:
        rows = ", ".join(f"({k()}, {t()})" for _ in range(n))
        sql = f"INSERT INTO users (user_id, name) VALUES {rows}"
    elif family == 3:
        sql = f"update users set name = {t()} where user_id = {k()}"
    elif family == 4:
        sql = f"DELETE FROM orders WHERE user_id = {k()} AND id > {k()}"
    elif family == 5:
        sql = f"select count(*) from users where name = {t()}"
    elif family == 6:
        sql = f"select * from users where user_id = {k()} or user_id = {k()}"
    elif family == 7:
        sql = f"select * from users where user_id = {k()} or name = {t()}"
    elif family == 8:
        sql = f"select * from events where event_id between {k()} and {k()}"
    elif family == 9:
        sql = f"select * from events where event_id >= {k()} and event_id < {k()} and kind = {t()}"
    elif family == 10:
        sql = f"select * from tenants where tenant = {t()}"
    elif family == 11:
        sql = f"/* tierproxy:shard_key={draw(st.integers(0, 9))} */ select * from users where name = {t()}"
    elif family == 12:
        sql = f"/* tierproxy:shard={draw(st.sampled_from(['s1', 'hot', 'nope']))} */ select * from users where user_id = {k()}"
    elif family == 13:
        sql = f"-- user {k()}\nselect /* {t()} */ * from users u where u.user_id = {k()} -- end"
    elif family == 14:
        sql = f"select * from users where user_id = any(array[{', '.join(k() for _ in range(n))}])"
    elif family == 15:
        sql = f"set tierproxy.shard_key = {k()}"
    elif family == 16:
        sql = f"select {k()}; select * from users where user_id = {k()}"
    else:
        sql = f"select * from users where user_id = {k()} and user_id = {k()}"
    return sql + draw(st.sampled_from(["", ";", " ; ", "\n"]))


@st.composite
def batches(draw: st.DrawFn) -> list[str]:
    """Statements of a few families, several of each (so shapes repeat with other values)."""
    out: list[str] = []
    for family in draw(st.lists(st.integers(0, 17), min_size=1, max_size=3)):
        n = draw(st.integers(1, 4))
        out += draw(st.lists(statements(family, n), min_size=1, max_size=6))
    return draw(st.permutations(out))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from([None, "42", "x"]))
def test_plans_from_the_shape_cache_equal_fresh_full_analyses(batch: list[str], session_key: str | None) -> None:
    r = ShardRouter(CONFIG)
    # The expected values depend on the text alone (no cache, no router state): made once per
    # distinct statement, not again for its repeats and the second round (most of the time here).
    expected: dict[str, tuple[object, object, object]] = {}
    for sql in batch * 2:  # the second round plans every shape from the cache
        if sql not in expected:
            analysis = analyze(sql, r.groups, r.shards)
            expected[sql] = (fresh_query_plan(r, sql, session_key), fresh_plan(r, sql, session_key, analysis), analysis)
        query_plan, full_plan, analysis = expected[sql]
        assert r.plan_query(sql, session_key=session_key) == query_plan, sql
        assert r.plan(sql, session_key=session_key) == full_plan, sql
        assert r.analyze(sql) == analysis, sql


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**40, 2**40), st.text(max_size=4)), min_size=1, max_size=6),
       st.integers(1, 4))
def test_insert_rows_split_from_a_cached_shape(rows: list[tuple[int, str]], repeat: int) -> None:
    r = ShardRouter(CONFIG)
    for i in range(repeat):
        values = ", ".join(f"({k + i}, '{s.replace(chr(39), chr(39) * 2)}')" for k, s in rows)
        sql = f"insert into users (user_id, name) values {values}"
        assert r.plan_query(sql) == fresh_query_plan(r, sql)
        assert r.plan(sql) == fresh_plan(r, sql)


@pytest.mark.parametrize("batch", [
    # the first statement's analysis holds for it, not for the shape: its literals are read as
    # keys only on some paths (an OR that does not pin the key, range bounds)
    ["select * from users where user_id = 1 or name = 'x'", "select * from users where user_id = 1.5 or name = 'x'"],
    ["select * from users where user_id in (1, name)", "select * from users where user_id in (1.5, name)"],
    ["select * from events where event_id between 1.5 and 2", "select * from events where event_id between 0 and 0"],
    ["select * from events where event_id > 2.5", "select * from events where event_id > 2500000"],
    ["select * from users where user_id = -1", "select * from users where user_id = 1",
     "select * from users where user_id = - 1", "select * from users where user_id = -99999999999999999999"],
    ["insert into users (user_id, name) values (1, 'a'), (1, 'b')",
     "insert into users (user_id, name) values (1, 'a'), (2, 'b')",
     "insert into users (user_id, name) values (1, 'a'), (null, 'b')"],
])
def test_values_that_change_the_analysis(batch: list[str]) -> None:
    r = ShardRouter(CONFIG)
    for sql in batch:
        assert r.plan_query(sql) == fresh_query_plan(r, sql), sql
        assert r.analyze(sql) == analyze(sql, r.groups, r.shards), sql


# --- the cache is used ----------------------------------------------------------------------------


def test_statements_of_one_shape_are_parsed_once() -> None:
    r = ShardRouter(CONFIG)
    for i in range(200):
        p = r.plan_query(f"SELECT name FROM users WHERE user_id = {i}")
        assert isinstance(p, One)
        r.analyze(f"SELECT name FROM users WHERE user_id = {i}")  # as the session's count_plan
    assert r.parses == 1 and r.shape_hits >= 199
    for i in range(50):  # a multi-row INSERT of one shard; across shards it is split in full
        p = r.plan_query(f"insert into users (user_id, name) values ({i}, 'a'), ({i}, 'b')")
        assert isinstance(p, One)
    p = r.plan_query("insert into users (user_id, name) values (1, 'a'), (2, 'b'), (3, 'c')")
    assert isinstance(p, Some) and sorted(x for part in p.parts for x in ("'a'", "'b'", "'c'") if x in part[1]) == ["'a'", "'b'", "'c'"]
    assert r.parses <= 3


@pytest.mark.parametrize("sql", [
    "select * from events where event_id between 10 and 20",  # a range: values decide the shards
    "select * from users where user_id = 1 or name = 'x'",  # a key that does not pin: values could error
    "set tierproxy.shard_key = 5",  # $1 is no SET value
    "select * from users where user_id = $1",  # parameters: by exact text
    "select * from users where created > now() - interval '1 day' and user_id = 3",
])
def test_shapes_whose_analysis_depends_on_values_are_not_shared(sql: str) -> None:
    r = ShardRouter(CONFIG)
    r.plan_query(sql)
    r.plan_query(sql + " ")
    assert r.shape_hits == 0


# --- the lexer against PostgreSQL's --------------------------------------------------------------

_PIECES = st.sampled_from([
    " ", "\n", "\t", "select", "x", "t1", "a$b", "é", "_", ".", ",", "(", ")", "=", "<", ">", "-", "+",
    "*", "/", "::", ";", "[", "]", "1", "42", "-7", "1.5", ".5", "1e3", "1.", "0x1F", "1_0", "'", "''",
    "'a'", "'it''s'", "'a\\b'", "E'", "E'\\''", "e'x'", "B'01'", "X'1f'", "N'n'", "U&'x'", "\"q\"",
    "\"a\"\"b\"", "$$", "$t$", "$1", "$", "--", "-- c\n", "/*", "*/", "/* c */", "/* /* n */ */",
    "'a'\n'b'", "'a' 'b'", "&", "!", "@", "~", "||",
])
_LITERALS = {"ICONST", "FCONST", "SCONST"}


def _tokens(sql: str) -> list[tuple[str, str, bool]]:
    """(name, text, glued): glued is a string right after a name or keyword (``date'x'``,
    ``E'x'``), which shape.py keeps as written."""
    out: list[tuple[str, str, bool]] = []
    prev = None
    for t in scan(sql):  # offsets in characters, the end inclusive
        glued = prev is not None and prev.end + 1 == t.start and (prev.name == "IDENT" or prev.kind != "NO_KEYWORD") \
            and not sql[prev.start:t.start].startswith('"')
        out.append((t.name, sql[t.start:t.end + 1], glued))
        prev = t
    return out


def _folded(tokens: list[tuple[str, str, bool]]) -> list[str]:
    """Token names with plain literals as LIT and "- LIT" as LIT."""
    out: list[str] = []
    for name, text, glued in tokens:
        lit = name in ("ICONST", "FCONST", "PARAM") or (name == "SCONST" and text.startswith("'") and not glued)
        if lit and out and out[-1] == "ASCII_45":
            out.pop()
        out.append("LIT" if lit else name)
    return out


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_lexer_literals_are_postgresqls(sql: str) -> None:
    found = lex(sql)
    if found is None:
        return
    try:
        orig = _tokens(sql)
    except ParseError:  # PostgreSQL's lexer refuses it: so does the parser, no analysis to share
        return
    shaped = _tokens(found.text)
    assert _folded(shaped) == _folded(orig)
    lits = [text for name, text, glued in orig if name == "SCONST" and text.startswith("'") and not glued]
    strings = [v for v, c in zip(found.values, found.key.rpartition("\x00")[2], strict=True) if c == "s"]
    assert [f"'{v.replace(chr(39), chr(39) * 2)}'" for v in strings] == lits


@pytest.mark.parametrize(("sql", "text", "values"), [
    ("SELECT name FROM users WHERE user_id = 4711", "SELECT name FROM users WHERE user_id = $1", ("4711",)),
    ("select 1 where a = -5 and b in (0042, 1.50, 'x''y')", "select $1 where a = $2 and b in ($3, $4, $5)",
     ("1", "-5", "42", "1.50", "x'y")),
    ("select a - 5, x = - 2147483648", "select a - $1, x = $2", ("5", "-2147483648")),
    ("/* tierproxy:shard_key=42 */ select 7", "/* tierproxy:shard_key=42 */ select $1", ("7",)),
    ("select E'\\'', $q$'$q$, \"a'\", 3 -- 'x\n", "select E'\\'', $q$'$q$, \"a'\", $1 -- 'x\n", ("3",)),
    ("select /* /* 1 */ 2 */ '3'", "select /* /* 1 */ 2 */ $1", ("3",)),
    # the "$" closing a dollar quote is no name glued to the next string (found by hypothesis)
    ("select $$$$'a' 'b'", "select $$$$$1 $2", ("a", "b")),
    ("select $q$x$q$'a'", "select $q$x$q$$1", ("a",)),
])
def test_lexer_examples(sql: str, text: str, values: tuple[str, ...]) -> None:
    found = lex(sql)
    assert found is not None and found.text == text and found.values == values


@pytest.mark.parametrize("sql", [
    "select 1 where a = $1", "select $$$$$1, 2", "select 'a\\'", "select 'a", "select /* 1", "select 0x1F", "select 1_000",
    "select U&'x'", "select 'a'\n'b'", "select 'a' -- c\n 'b'", "select $x", "select 'a\\b', 1",
])
def test_lexer_gives_no_shape_when_unsure(sql: str) -> None:
    assert lex(sql) is None
