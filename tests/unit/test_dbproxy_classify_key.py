"""The classifier cache's key (classify_key.py) on what ORMs send: string literals, IN lists,
tagging comments. The rule it must keep: two texts with one key get one decision. Hypothesis fills
statement skeletons (ones whose decision hangs on a function name, a relation, a lock clause, a
hint, a second statement) with tricky literals and comments, and requires the cached decision to
equal a fresh full parse for every text, whatever filled the cache first.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.ormsql import statements
from proxy.dbproxy.classify import ClassifierCache, Target, classify, literal_key, literal_key_bytes

TEXT = st.lists(st.sampled_from(list("ab1 '\"$-/*;\\\n\r\t%:") + ["tierproxy:primary", "tierproxy:replica", "$$",
                                                                   "--", "/*", "*/", "''", "e'"]),
                max_size=8).map("".join)  # fmt: skip


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


STRINGS = st.one_of(
    TEXT.map(_quoted),
    TEXT.map(lambda t: "E" + _quoted(t)),
    st.sampled_from(["E'\\''", "E'\\u00zz'", "E'\\377'", "e'a\\nb'", "B'101'", "X'ff'", "N'x'", "U&'d\\0061t'",
                     "'unterminated", "'a' 'b'", "'a'\n'b'", "'a' /* x */\n'b'", "'a' -- x\n'b'", "date'2020-01-01'"]),
    st.tuples(st.sampled_from(["", "t", "tag"]), TEXT).map(lambda p: f"${p[0]}${p[1].replace('$', '')}${p[0]}$"),
)  # fmt: skip
NUMBERS = st.one_of(st.integers(0, 10**12).map(str), st.sampled_from(
    ["1.5", "1e5", "1.5e-3", ".5", "0x1F", "1_000", "1.", "1..2", "1e", "$1", "-3", "007", "1$$", "1e'x'"]))
COMMENTS = st.one_of(
    TEXT.map(lambda t: "/*" + t.replace("*/", "") + "*/"),
    TEXT.map(lambda t: "--" + t.replace("\n", "") + "\n"),
    st.sampled_from(["/* tierproxy:primary */", "/* tierproxy:replica */", "-- tierproxy:primary\n",
                     "--tierproxy:replica\r\n", "/* TierProxy : Primary */", "/* a /* b */ c */", "/* a /* b */",
                     "/**/", "-- x\r SELECT 1\n", "/* controller='users',request_id=42 */"]),
)  # fmt: skip
SKELETONS = [
    "SELECT * FROM users WHERE email = {s} AND id = {n}",
    "SELECT nextval({s}), {n}",
    "SELECT set_config({s}, {s}, true)",
    "SELECT set_config({s}, {s}, {s})",
    "SELECT * FROM pg_stat_activity WHERE query LIKE {s}",
    "SELECT {s}::regclass, {n}",
    "SELECT * FROM t WHERE id IN ({n}, {n}, {s}) FOR UPDATE",
    "SELECT * FROM t WHERE id IN ({n}, {s}) AND x NOT IN ({s})",
    "UPDATE t SET a = {s} WHERE id IN ({n}, {n})",
    "INSERT INTO t VALUES ({n}, {s}) RETURNING id",
    "WITH x AS (DELETE FROM t WHERE a = {s} RETURNING *) SELECT * FROM x",
    "SELECT pg_advisory_lock({n})",
    "SELECT {s} AS a; SELECT {n}",
    "SELECT {s} AS a; INSERT INTO t VALUES ({n})",
    "SELECT * FROM t WHERE a = {s} {c} AND b = {n}",
    "VALUES ({s}, {n})",
    "SELECT * INTO TEMP x FROM t WHERE a = {s}",
    "select f({n}, {s}) from \"t1\" where \"a\"={s}",
    "SELECT {s}{s}, {n}{s}",
    "SET x = {s}",
    "EXPLAIN (ANALYZE {n}) DELETE FROM t WHERE a = {s}",
]


@st.composite
def statement(draw: st.DrawFn, skeleton: str) -> str:
    out = skeleton
    for slot, strategy in (("{s}", STRINGS), ("{n}", NUMBERS), ("{c}", COMMENTS)):
        while slot in out:
            out = out.replace(slot, draw(strategy), 1)
    lead = "".join(draw(COMMENTS) + draw(st.sampled_from(["", " ", "\n"])) for _ in range(draw(st.integers(0, 2))))
    tail = draw(st.sampled_from(["", ";", " ;", "; ", ";;"]))
    if draw(st.booleans()):
        tail = draw(st.sampled_from([" ", "", "; "])) + draw(COMMENTS) + tail
    return lead + out + tail


@st.composite
def same_skeleton(draw: st.DrawFn) -> list[str]:
    skeleton = draw(st.sampled_from(SKELETONS))
    return [draw(statement(skeleton)) for _ in range(draw(st.integers(2, 4)))]


@settings(max_examples=600, deadline=None)
@given(same_skeleton())
def test_the_cached_decision_is_the_full_parse_whatever_came_first(texts):
    by_str, by_bytes = ClassifierCache(), ClassifierCache()
    for sql in texts:
        fresh = classify(sql)
        assert by_str.get(sql) == fresh, (sql, literal_key(sql))
        assert by_bytes.get_bytes(sql.encode("utf-8", "surrogatepass")) == fresh, (sql, literal_key(sql))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SKELETONS).flatmap(statement))
def test_a_key_is_its_own_key_and_decided_like_its_texts(sql):
    key = literal_key(sql)
    assert literal_key(key) == key
    assert classify(key) == classify(sql), (sql, key)
    assert literal_key_bytes(sql.encode()) == key.encode()


def test_orm_statements_of_one_shape_share_one_entry():
    cache = ClassifierCache()
    texts = statements(600)
    for sql in texts:
        assert cache.get_bytes(sql) == classify(sql.decode())
    # bench/ormsql.py has six statement shapes: six full parses for 600 texts, nearly all distinct
    assert len(set(texts)) > 550 and cache.misses == 6 and cache.hits == 594


def test_what_shares_a_key_and_what_does_not():
    same = [
        ("/* controller='users',request_id=1 */ SELECT * FROM u WHERE email = 'a@x'",
         "/* controller='orders',request_id=2 */ SELECT * FROM u WHERE email = 'it''s'"),
        ("SELECT * FROM u WHERE id IN (1, 2, 3) -- trace=1", "SELECT * FROM u WHERE id IN (4) -- trace=2"),
        ("SELECT * FROM u WHERE a = $$x$$;", "SELECT * FROM u WHERE a = $q$y'$q$;"),
        ("-- app=a\nUPDATE u SET n = 'x' WHERE id = 1", "-- app=b\nUPDATE u SET n = '' WHERE id = 2"),
    ]
    for a, b in same:
        assert literal_key(a) == literal_key(b) != a, (a, b)
        assert classify(a) == classify(b)
    apart = [
        ("/* tierproxy:primary */ SELECT * FROM u WHERE a = 'x'", "/* tierproxy:replica */ SELECT * FROM u WHERE a = 'x'"),
        ("/* tierproxy:primary */ SELECT 'a'", "/* app */ SELECT 'a'"),
        ("SELECT nextval('s')", "SELECT currval('s')"),
        ("SELECT 'a'; SELECT 1", "SELECT 'b'; SELECT 2"),  # two statements: exact text
        ("SELECT E'\\377'", "SELECT E'\\101'"),  # E'' with backslashes: exact text (one is an error)
        ("SELECT 'a' /* x */\n'b'", "SELECT 'a'  \n'b'"),  # the first is two constants, an error
        ("SELECT 1 /* a /* b */ c */", "SELECT 2 /* a /* b */ c */"),  # nested comment: exact text
    ]
    for a, b in apart:
        assert literal_key(a) != literal_key(b), (a, b)
    hinted = literal_key("/* tierproxy:primary */ SELECT * FROM u WHERE a = 'x'")
    assert hinted.startswith("/* tierproxy:primary */") and classify(hinted).target is Target.PRIMARY
