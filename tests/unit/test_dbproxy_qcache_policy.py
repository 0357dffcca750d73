"""The query cache's decisions (issue 20): the hint, which statements are cacheable, the key, the
tables a read names and a write changes. Generated statements are compared with the classifier."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify import Reason, Target, classify
from proxy.dbproxy.qcache_policy import (
    cache_hint,
    cache_key,
    cacheable,
    normalise,
    statement_shape,
    written_tables,
)


@pytest.mark.parametrize(
    ("sql", "ttl"),
    [
        ("/* tierproxy:cache ttl=30 */ SELECT 1", 30),
        ("/*tierproxy:cache ttl=30*/SELECT 1", 30),
        ("/* TierProxy : Cache  TTL = 5 */ SELECT 1", 5),
        ("-- tierproxy:cache ttl=7\nSELECT 1", 7),
        ("/* app=x */ /* tierproxy:cache ttl=30 */ SELECT 1", 30),
        ("/* tierproxy:cache ttl=30 */ /* tierproxy:primary */ SELECT 1", 30),
        ("/* tierproxy:primary */ /* tierproxy:cache ttl=12 */ SELECT 1", 12),
        ("SELECT 1 /* tierproxy:cache ttl=30 */", None),  # not leading
        ("/* tierproxy:cache */ SELECT 1", None),  # no ttl
        ("/* tierproxy:cache ttl=0 */ SELECT 1", None),
        ("/* tierproxy:cache ttl=-5 */ SELECT 1", None),
        ("/* tierproxy:cache ttl=30s */ SELECT 1", None),
        ("/* tierproxy:cache ttl=86401 */ SELECT 1", None),
        ("/* tierproxy:cache ttl=86400 */ SELECT 1", 86400),
        ("/* tierproxy:cache ttl=30 SELECT 1", None),  # unterminated comment
        ("/* outer /* tierproxy:cache ttl=30 */ */ SELECT 1", None),  # nested: one comment
        ("SELECT 1", None),
        ("", None),
    ],
)
def test_cache_hint(sql, ttl):
    assert cache_hint(sql) == ttl


def _ok(sql, *, in_transaction=False, read_only_transaction=False, pinned=False):
    return cacheable(
        classify(sql), statement_shape(sql), in_transaction=in_transaction,
        read_only_transaction=read_only_transaction, pinned=pinned,
    )  # fmt: skip


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE id = 1",
        "SELECT a, count(*) FROM t JOIN u USING (id) GROUP BY a",
        "WITH x AS (SELECT * FROM t) SELECT * FROM x",
        "VALUES (1), (2)",
        "TABLE t",
        "/* tierproxy:cache ttl=30 */ SELECT lower(name) FROM users WHERE id = $1",
        "SELECT * FROM t WHERE created > '2020-01-01'::date",
    ],
)
def test_cacheable(sql):
    assert _ok(sql)
    assert _ok(sql, in_transaction=True, read_only_transaction=True)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM (SELECT * FROM t FOR NO KEY UPDATE) s",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "SELECT * INTO u FROM t",
        "SELECT random()",
        "SELECT * FROM t ORDER BY random() LIMIT 1",
        "SELECT now()",
        "SELECT * FROM t WHERE ts > now() - interval '1 hour'",
        "SELECT CURRENT_TIMESTAMP",
        "SELECT * FROM t WHERE d = CURRENT_DATE",
        "SELECT current_user",
        "SELECT clock_timestamp()",
        "SELECT gen_random_uuid()",
        "SELECT current_setting('work_mem')",
        "SELECT nextval('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
        "SELECT * FROM pg_class",
        "SELECT * FROM information_schema.tables",
        "SELECT 't'::regclass",
        "SELECT * FROM pg_temp.scratch",
        "SELECT * FROM pg_stat_activity",
        "SELECT 1; SELECT 2",
        "SHOW search_path",
        "EXPLAIN SELECT 1",
        "COPY t TO STDOUT",
        "/* tierproxy:primary */ SELECT * FROM t",
        "/* tierproxy:replica */ SELECT * FROM t",
        "BEGIN",
        "SET search_path = x",
        "SELECT * FROM t WHERE",  # parse error
        "SELECT 1\x00",
    ],
)
def test_not_cacheable(sql):
    assert not _ok(sql)


def test_transaction_and_pin():
    sql = "SELECT * FROM t"
    assert not _ok(sql, in_transaction=True)  # a read-write transaction may read its own writes
    assert not _ok(sql, pinned=True)


def test_normalise_drops_comments_and_spacing_only():
    assert normalise("SELECT  *\n FROM t -- x\n WHERE a=1") == b"SELECT * FROM t WHERE a = 1"
    assert normalise("/* tierproxy:cache ttl=30 */ /* request_id=42 */ SELECT 1") == b"SELECT 1"
    assert normalise("SELECT 'a  b'") == b"SELECT 'a  b'"
    assert normalise("SELECT 1") != normalise("SELECT 2")
    assert normalise("SELECT 'é€', x") == "SELECT 'é€' , x".encode()
    assert normalise("select 1") != normalise("SELECT 1")  # the same to PostgreSQL; a miss is safe


def test_cache_key_separates_what_changes_answers():
    base = dict(database="db", user="u", settings={"TimeZone": "UTC", "application_name": "a"})
    key = cache_key(b"SELECT 1", **base)
    assert len(key) == 32
    assert key == cache_key(b"SELECT 1", **{**base, "settings": {"timezone": "UTC", "application_name": "b"}})
    others = [
        cache_key(b"SELECT 2", **base),
        cache_key(b"SELECT 1", **{**base, "database": "db2"}),
        cache_key(b"SELECT 1", **{**base, "user": "v"}),
        cache_key(b"SELECT 1", **{**base, "settings": {"TimeZone": "Europe/Paris"}}),
        cache_key(b"SELECT 1", **{**base, "settings": {"TimeZone": "UTC", "DateStyle": "ISO, DMY"}}),
        cache_key(b"SELECT 1", **{**base, "settings": {"TimeZone": "UTC", "search_path": "x"}}),
        cache_key(b"SELECT 1", **base, params=[b"1"]),
        cache_key(b"SELECT 1", **base, params=[None]),
        cache_key(b"SELECT 1", **base, params=[b""]),
        cache_key(b"SELECT 1", **base, params=[b"1"], param_formats=[1]),
        cache_key(b"SELECT 1", **base, result_formats=[1]),
    ]
    assert len({key, *others}) == 1 + len(others)
    # Length prefixes: moving a byte from one field to the next is another key.
    assert cache_key(b"SELECT 1", **base, params=[b"ab", b"c"]) != cache_key(
        b"SELECT 1", **base, params=[b"a", b"bc"]
    )


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("INSERT INTO t VALUES (1)", {"t"}),
        ("INSERT INTO s.T SELECT * FROM u", {"t", "u"}),
        ('UPDATE "Mixed" SET a = 1', {"Mixed"}),
        ("DELETE FROM t USING u WHERE t.id = u.id", {"t", "u"}),
        ("MERGE INTO m USING s ON m.a = s.a WHEN MATCHED THEN DELETE", {"m", "s"}),
        ("TRUNCATE a, b", {"a", "b"}),
        ("COPY t FROM STDIN", {"t"}),
        ("WITH x AS (INSERT INTO a VALUES (1) RETURNING *) SELECT * FROM x", {"a", "x"}),
        ("SELECT * FROM t FOR UPDATE", set()),
        ("LOCK TABLE t", set()),
        ("INSERT INTO a VALUES (1); DELETE FROM b", {"a", "b"}),
        ("TRUNCATE a CASCADE", None),
        ("CREATE TABLE z (a int)", None),
        ("DROP TABLE t", None),
        ("ALTER TABLE t ADD COLUMN b int", None),
        ("DO $$ BEGIN DELETE FROM t; END $$", None),
        ("CALL p()", None),
        ("SELECT nextval('s')", None),
        ("SELECT * INTO u FROM t", None),
        ("INSERT INTO a VALUES (1); CREATE TABLE c (a int)", None),
        ("INSERT INTO", None),
    ],
)
def test_written_tables(sql, tables):
    got = written_tables(sql, classify(sql))
    assert got == (None if tables is None else frozenset(tables))


def test_read_tables():
    shape = statement_shape("SELECT * FROM a JOIN s.B ON true WHERE x IN (SELECT y FROM \"C\")")
    assert shape is not None and shape.tables == {"a", "b", "C"}


# -- generated statements, compared with the classifier -----------------------------------------

# (text, unsafe): the generator knows what it put in; the code under test is not asked.
SAFE_ITEMS = ["a", "count(*)", "lower(b)", "1 + 2", "'x'", "coalesce(a, 0)", "$1"]
UNSAFE_ITEMS = [
    "random()", "now()", "clock_timestamp()", "CURRENT_DATE", "CURRENT_TIMESTAMP", "current_user",
    "gen_random_uuid()", "nextval('s')", "pg_advisory_lock(1)", "set_config('x', 'y', false)",
    "current_setting('x')", "pg_backend_pid()", "txid_current()", "(SELECT random())",
    "statement_timestamp()", "localtimestamp", "pg_catalog.version()",
]  # fmt: skip
SAFE_FROM = ["t", "s.t", "t JOIN u USING (id)", "(SELECT a FROM u) AS q"]
UNSAFE_FROM = [
    "pg_class", "pg_temp.tt", "t TABLESAMPLE BERNOULLI (5)", "information_schema.columns",
    "pg_stat_activity", "(SELECT a FROM u FOR UPDATE) AS q",
]  # fmt: skip
SAFE_TAIL = ["", " WHERE a = 1", " ORDER BY a LIMIT 3", " GROUP BY a"]
UNSAFE_TAIL = [" FOR UPDATE", " FOR SHARE", " FOR NO KEY UPDATE", " FOR KEY SHARE", "; SELECT 1",
               "; DELETE FROM t", " WHERE a > now()"]  # fmt: skip
UNSAFE_WRAP = [
    "WITH w AS (INSERT INTO t VALUES (1) RETURNING *) {}", "EXPLAIN {}", "/* tierproxy:primary */ {}",
    "CREATE TABLE c AS {}", "DECLARE c CURSOR FOR {}", "COPY ({}) TO STDOUT",
]  # fmt: skip


@st.composite
def statements(draw):
    unsafe = False
    items = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            items.append(draw(st.sampled_from(SAFE_ITEMS)))
        else:
            items.append(draw(st.sampled_from(UNSAFE_ITEMS)))
            unsafe = True
    source = draw(st.sampled_from(SAFE_FROM + UNSAFE_FROM))
    unsafe |= source in UNSAFE_FROM
    tail = draw(st.sampled_from(SAFE_TAIL + UNSAFE_TAIL))
    unsafe |= tail in UNSAFE_TAIL
    if "GROUP BY" in tail and items != ["a"]:
        tail = ""
    sql = f"SELECT {', '.join(items)} FROM {source}{tail}"
    if draw(st.booleans()):
        sql = draw(st.sampled_from(UNSAFE_WRAP)).format(sql)
        unsafe = True
    if draw(st.booleans()):
        sql = "/* tierproxy:cache ttl=30 */ " + sql
    return sql, unsafe


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=statements(), txn=st.sampled_from(["none", "read-only", "read-write"]),
       pinned=st.booleans())  # fmt: skip
def test_unsafe_never_cacheable(generated, txn, pinned):
    sql, unsafe = generated
    ok = _ok(sql, in_transaction=txn != "none", read_only_transaction=txn == "read-only", pinned=pinned)
    decision = classify(sql)
    if ok:
        # Whatever the cache serves, the classifier calls a plain read a replica may answer.
        assert decision.target is Target.REPLICA and decision.reason is Reason.READ
        assert not decision.pins_session and not decision.reads_catalog
    if unsafe or pinned or txn == "read-write":
        assert not ok
    else:
        assert ok  # the property is not vacuous: every safe statement is cached


def test_cache_key_with_a_precomputed_context():
    from proxy.dbproxy.qcache_policy import key_context

    settings = {"TimeZone": "UTC", "application_name": "a"}
    ctx = key_context(database="d", user="u", settings=settings)
    assert cache_key(b"SELECT 1", context=ctx) == cache_key(b"SELECT 1", database="d", user="u", settings=settings)
    assert cache_key(b"SELECT 1", context=ctx) != cache_key(b"SELECT 1", context=key_context(
        database="d", user="u", settings={"TimeZone": "Europe/Paris"}))  # fmt: skip
    # No parameters is not the same key as one empty parameter, nor as a NULL one.
    keys = {cache_key(b"x", context=ctx), cache_key(b"x", context=ctx, params=[b""]),
            cache_key(b"x", context=ctx, params=[None]), cache_key(b"x", context=ctx, result_formats=[1])}  # fmt: skip
    assert len(keys) == 4
