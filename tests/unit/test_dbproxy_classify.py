"""Statement classifier: the routing table of issue 5, hints, multi-statement strings, the cache.

Each row of ROWS is a SQL string and the whole expected Decision except `detail` (checked only
where a row gives it). tests/integration/test_dbproxy_classify_parity.py reuses ROWS against a
real server.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify import (
    DEFAULT_WRITE_FUNCTIONS,
    DETAILS,
    ClassifierCache,
    Decision,
    Reason,
    Target,
    classify,
    literal_key,
    literal_key_bytes,
)
from proxy.dbproxy.classify_functions import (
    SESSION_PIN_FUNCTIONS,
    SESSION_RESET_FUNCTIONS,
)

P, R = Target.PRIMARY, Target.REPLICA
READ, WRITE, TX = Reason.READ, Reason.WRITE, Reason.TRANSACTION_CONTROL
SESSION, HINT, UNPARSEABLE = Reason.SESSION, Reason.HINT, Reason.UNPARSEABLE
VOLATILE, LOCKING, MULTI, EMPTY = (
    Reason.VOLATILE_FUNCTION,
    Reason.LOCKING,
    Reason.MULTI_STATEMENT,
    Reason.EMPTY,
)

# (sql, target, reason, flags, detail or None). flags: "begins", "ro", "ends", "pins".
# fmt: off
ROWS: list[tuple[str, Target, Reason, str, str | None]] = [
    # -- reads
    ("SELECT 1", R, READ, "", "select"),
    ("select * from t where id = 1", R, READ, "", "select"),
    ("SELECT * FROM t JOIN u ON t.id = u.id ORDER BY 1 LIMIT 5", R, READ, "", None),
    ("SELECT count(*), max(v) FROM t GROUP BY id HAVING count(*) > 1", R, READ, "", None),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", R, READ, "", None),
    ("SELECT 1 UNION ALL SELECT 2", R, READ, "", None),
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", R, READ, "", "select"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
     "SELECT * FROM r", R, READ, "", None),
    ("VALUES (1)", R, READ, "", "select"),
    ("VALUES (1, 'a'), (2, 'b')", R, READ, "", None),
    ("TABLE t", R, READ, "", "select"),
    ("SHOW search_path", R, READ, "", "show"),
    ("SHOW ALL", R, READ, "", "show"),
    ("EXPLAIN SELECT * FROM t", R, READ, "", "explain"),
    ("EXPLAIN (COSTS OFF) SELECT * FROM t", R, READ, "", "explain"),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, READ, "", "select"),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", R, READ, "", "explain"),
    ("EXPLAIN DELETE FROM t", R, READ, "", "explain"),  # planned, not executed
    ("COPY t TO STDOUT", R, READ, "", "copy-to"),
    ("COPY (SELECT 1) TO STDOUT", R, READ, "", "copy-to"),
    ("COPY t (id, v) TO STDOUT WITH (FORMAT csv, HEADER)", R, READ, "", "copy-to"),
    ("SELECT $1::int", R, READ, "", "select"),
    ("SELECT * FROM t WHERE id = $1 AND v = $2", R, READ, "", "select"),
    ("SELECT random(), gen_random_uuid(), now(), clock_timestamp()", R, READ, "", "select"),
    ("SELECT pg_sleep(0)", R, READ, "", "select"),
    ("SELECT pg_is_in_recovery(), current_setting('search_path')", R, READ, "", "select"),
    # transaction-local set_config changes nothing outside the transaction (row-level security)
    ("SELECT set_config('app.user', '42', true)", R, READ, "", "select"),
    ("SELECT set_config('app.user', '42', true); SELECT * FROM t", R, READ, "", "multi-statement"),
    ("SeLeCt /* inline */ V FrOm T -- trailing\n", R, READ, "", "select"),
    ("  \n\t SELECT 1 ;  ", R, READ, "", "select"),
    ("SELECT 'nextval(''s'')' AS text_not_a_call", R, READ, "", "select"),
    ("SELECT nextval FROM t", R, READ, "", "select"),  # a column, not a call
    ("FETCH 10 FROM c", R, READ, "", "fetch"),
    ("MOVE NEXT IN c", R, READ, "", "fetch"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", R, READ, "", "declare-cursor"),
    # -- writes
    ("INSERT INTO t VALUES (1, 'a')", P, WRITE, "", "insert"),
    ("INSERT INTO t VALUES ($1, $2) RETURNING id", P, WRITE, "", "insert"),
    ("insert into t select * from t on conflict do nothing", P, WRITE, "", "insert"),
    ("UPDATE t SET v = 'b' WHERE id = 1", P, WRITE, "", "update"),
    ("DELETE FROM t WHERE id = 1", P, WRITE, "", "delete"),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", P, WRITE, "", "merge"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", P, WRITE, "", "writing-cte"),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", P, WRITE, "",
     "writing-cte"),
    ("WITH d AS (DELETE FROM t RETURNING id) SELECT * FROM u WHERE id IN (SELECT id FROM d)",
     P, WRITE, "", "writing-cte"),
    ("EXPLAIN ANALYZE WITH x AS (UPDATE t SET v = 'y' RETURNING *) SELECT * FROM x", P, WRITE,
     "", "writing-cte"),
    # PostgreSQL refuses these (0A000: a data-modifying WITH must be at the top level), but the
    # classifier does not rely on that: any data-modifying statement in the tree is a write.
    ("SELECT * FROM (WITH y AS (UPDATE t SET v = 'x' RETURNING *) SELECT * FROM y) AS sub",
     P, WRITE, "", "writing-cte"),
    ("SELECT * FROM t WHERE id IN (WITH d AS (DELETE FROM u RETURNING id) SELECT id FROM d)",
     P, WRITE, "", "writing-cte"),
    ("WITH a AS (SELECT 1), b AS (WITH c AS (DELETE FROM t RETURNING 1) SELECT * FROM c) "
     "SELECT * FROM a, b", P, WRITE, "", "writing-cte"),
    ("SELECT * INTO t2 FROM t", P, WRITE, "", "select-into"),
    ("CREATE TABLE t3 AS SELECT * FROM t", P, WRITE, "", "create-table-as"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", P, WRITE, "", "create-table-as"),
    ("COPY t FROM STDIN", P, WRITE, "", "copy-from"),
    ("COPY t FROM STDIN WITH (FORMAT binary)", P, WRITE, "", "copy-from"),
    ("COPY t TO '/tmp/t.csv'", P, WRITE, "", "copy-to-server-file"),
    ("COPY t TO PROGRAM 'cat'", P, WRITE, "", "copy-to-server-file"),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", P, WRITE, "", "writing-cte"),
    ("EXPLAIN ANALYZE DELETE FROM t", P, WRITE, "", "delete"),
    ("EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)", P, WRITE, "", "insert"),
    ("CREATE TABLE t4 (id int PRIMARY KEY, v text)", P, WRITE, "", "stmt:CreateStmt"),
    ("CREATE TABLE t5 (id int DEFAULT nextval('s'))", P, WRITE, "", "stmt:CreateStmt"),
    ("CREATE UNLOGGED TABLE t6 (id int)", P, WRITE, "", "stmt:CreateStmt"),
    ("ALTER TABLE t ADD COLUMN w int", P, WRITE, "", "stmt:AlterTableStmt"),
    ("DROP TABLE IF EXISTS t", P, WRITE, "", "stmt:DropStmt"),
    ("CREATE INDEX ON t (v)", P, WRITE, "", "stmt:IndexStmt"),
    ("CREATE VIEW v AS SELECT * FROM t", P, WRITE, "", "stmt:ViewStmt"),
    ("CREATE SEQUENCE s2", P, WRITE, "", "stmt:CreateSeqStmt"),
    ("GRANT SELECT ON t TO PUBLIC", P, WRITE, "", "stmt:GrantStmt"),
    ("VACUUM t", P, WRITE, "", "stmt:VacuumStmt"),
    ("ANALYZE t", P, WRITE, "", "stmt:VacuumStmt"),
    ("CLUSTER t USING t_pkey", P, WRITE, "", "stmt:ClusterStmt"),
    ("REFRESH MATERIALIZED VIEW mv", P, WRITE, "", "stmt:RefreshMatViewStmt"),
    ("COMMENT ON TABLE t IS 'x'", P, WRITE, "", "stmt:CommentStmt"),
    ("TRUNCATE t", P, WRITE, "", "stmt:TruncateStmt"),
    ("CALL p(1)", P, WRITE, "", "call"),
    ("DO $$ BEGIN PERFORM 1; END $$", P, WRITE, "", "do"),
    ("NOTIFY c", P, WRITE, "", "notify"),
    ("NOTIFY c, 'payload'", P, WRITE, "", "notify"),
    ("CHECKPOINT", P, WRITE, "", "stmt:CheckPointStmt"),
    # -- locking
    ("SELECT * FROM t FOR UPDATE", P, LOCKING, "", "for-update-share"),
    ("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", P, LOCKING, "", "for-update-share"),
    ("SELECT * FROM t FOR SHARE", P, LOCKING, "", "for-update-share"),
    ("SELECT * FROM t FOR KEY SHARE NOWAIT", P, LOCKING, "", "for-update-share"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) AS sub", P, LOCKING, "", "for-update-share"),
    ("WITH x AS (SELECT * FROM t FOR SHARE) SELECT * FROM x", P, LOCKING, "", "for-update-share"),
    ("LOCK t", P, LOCKING, "", "lock"),
    ("LOCK TABLE t IN ACCESS SHARE MODE", P, LOCKING, "", "lock"),
    ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", P, LOCKING, "", "for-update-share"),
    # -- volatile / writing functions
    ("SELECT nextval('s')", P, VOLATILE, "", "write-function"),
    ("SELECT pg_catalog.nextval('s')", P, VOLATILE, "", "write-function"),
    ("select NEXTVAL('s')", P, VOLATILE, "", "write-function"),
    ("select setval('s', 10)", P, VOLATILE, "", "write-function"),
    ("SELECT currval('s')", P, VOLATILE, "", "write-function"),
    ("SELECT lastval()", P, VOLATILE, "", "write-function"),
    ("SELECT * FROM nextval('s')", P, VOLATILE, "", "write-function"),
    ("SELECT id FROM t WHERE id = (SELECT nextval('s'))", P, VOLATILE, "", "write-function"),
    ("WITH x AS (SELECT nextval('s') AS n) SELECT n FROM x", P, VOLATILE, "", "write-function"),
    ("SELECT CASE WHEN $1 THEN setval('s', 1) END", P, VOLATILE, "", "write-function"),
    ("SELECT pg_notify('c', 'x')", P, VOLATILE, "", "write-function"),
    ("SELECT txid_current()", P, VOLATILE, "", "write-function"),
    ("SELECT pg_current_xact_id()", P, VOLATILE, "", "write-function"),
    ("SELECT pg_current_wal_lsn()", P, VOLATILE, "", "write-function"),
    ("SELECT pg_advisory_xact_lock(1)", P, VOLATILE, "", "write-function"),
    ("SELECT pg_try_advisory_xact_lock(1, 2)", P, VOLATILE, "", "write-function"),
    ("SELECT pg_terminate_backend(123)", P, VOLATILE, "", "write-function"),
    ("SELECT pg_reload_conf()", P, VOLATILE, "", "write-function"),
    ("SELECT lo_create(0)", P, VOLATILE, "", "write-function"),
    ("SELECT pg_stat_reset()", P, VOLATILE, "", "write-function"),
    ("SELECT * FROM pg_create_physical_replication_slot('x')", P, VOLATILE, "", None),
    ("EXPLAIN ANALYZE SELECT nextval('s')", P, VOLATILE, "", "write-function"),
    ("COPY (SELECT nextval('s')) TO STDOUT", P, VOLATILE, "", "write-function"),
    ("INSERT INTO t VALUES (nextval('s'), 'x')", P, WRITE, "", "insert"),
    # -- session state: pins
    ("SET search_path = x", P, SESSION, "pins", "set"),
    ("SET search_path TO x, public", P, SESSION, "pins", "set"),
    ("set statement_timeout = '5s'", P, SESSION, "pins", "set"),
    ("SET SESSION work_mem = '64MB'", P, SESSION, "pins", "set"),
    ("SET ROLE app", P, SESSION, "pins", "set"),
    ("SET TIME ZONE 'UTC'", P, SESSION, "pins", "set"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", P, SESSION, "pins",
     "set-session-characteristics"),
    ("SELECT pg_advisory_lock(1)", P, SESSION, "pins", "advisory-lock"),
    ("SELECT pg_try_advisory_lock(1, 2)", P, SESSION, "pins", "advisory-lock"),
    ("SELECT pg_catalog.pg_advisory_lock_shared(7)", P, SESSION, "pins", "advisory-lock"),
    ("SELECT set_config('search_path', 'x', false)", P, SESSION, "pins", "set-config"),
    ("SELECT set_config('search_path', 'x', $1)", P, SESSION, "pins", "set-config"),
    ("INSERT INTO t SELECT 2, 'x' FROM (SELECT pg_advisory_lock(1)) AS l", P, WRITE, "pins",
     "insert"),
    ("PREPARE p AS SELECT 1", P, SESSION, "pins", "prepare"),
    ("PREPARE q (int) AS INSERT INTO t VALUES ($1)", P, SESSION, "pins", "prepare"),
    ("LISTEN c", P, SESSION, "pins", "listen"),
    ("CREATE TEMP TABLE tmp (id int)", P, SESSION, "pins", "temp-object"),
    ("CREATE TEMPORARY TABLE tmp2 AS SELECT 1", P, SESSION, "pins", "temp-object"),
    ("CREATE TABLE pg_temp.tmp3 (id int)", P, SESSION, "pins", "temp-object"),
    ("CREATE TEMP VIEW tv AS SELECT 1", P, SESSION, "pins", "temp-object"),
    ("CREATE TEMP SEQUENCE ts", P, SESSION, "pins", "temp-object"),
    ("SELECT * INTO TEMP tmp4 FROM t", P, SESSION, "pins", "temp-object"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", P, SESSION, "pins", "cursor-with-hold"),
    # -- session state: no pin
    ("EXECUTE p", P, SESSION, "", "execute-prepared"),
    ("EXECUTE p(1, 'x')", P, SESSION, "", "execute-prepared"),
    ("EXPLAIN EXECUTE p", P, SESSION, "", "execute-prepared"),
    ("DEALLOCATE p", R, SESSION, "", "session-reset"),
    ("DEALLOCATE ALL", R, SESSION, "", "session-reset"),
    ("DISCARD ALL", R, SESSION, "", "session-reset"),
    ("DISCARD TEMP", R, SESSION, "", "session-reset"),
    ("RESET search_path", R, SESSION, "", "session-reset"),
    ("RESET ALL", R, SESSION, "", "session-reset"),
    ("SET search_path TO DEFAULT", R, SESSION, "", "session-reset"),
    ("UNLISTEN *", R, SESSION, "", "session-reset"),
    ("UNLISTEN c", R, SESSION, "", "session-reset"),
    ("CLOSE ALL", R, SESSION, "", "session-reset"),
    ("CLOSE c", R, SESSION, "", "session-reset"),
    ("SELECT pg_advisory_unlock_all()", R, SESSION, "", "session-reset"),
    ("SELECT pg_advisory_unlock(1)", R, SESSION, "", "session-reset"),
    # asyncpg's pool reset query, sent at every connection release: must not pin.
    ("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;", R, SESSION, "",
     "multi-statement"),
    # -- transaction control
    ("BEGIN", P, TX, "begins", "begin"),
    ("BEGIN READ WRITE", P, TX, "begins", "begin"),
    ("START TRANSACTION", P, TX, "begins", "begin"),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ", P, TX, "begins", "begin"),
    ("BEGIN READ ONLY", R, TX, "begins ro", "begin-read-only"),
    ("begin transaction read only", R, TX, "begins ro", "begin-read-only"),
    ("START TRANSACTION READ ONLY", R, TX, "begins ro", "begin-read-only"),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", R, TX, "begins ro",
     "begin-read-only"),
    ("BEGIN READ ONLY, READ WRITE", P, TX, "begins", "begin"),  # the last one wins
    # A hot standby refuses serializable transactions (0A000): read-only, but on the primary.
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", P, TX, "begins ro",
     "begin-serializable-read-only"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", P, TX, "begins ro",
     "begin-serializable-read-only"),
    ("SET TRANSACTION READ ONLY", R, TX, "ro", "set-transaction-read-only"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", P, TX, "", "set-transaction"),
    ("SET TRANSACTION READ WRITE", P, TX, "", "set-transaction"),
    ("COMMIT", P, TX, "ends", "commit"),
    ("END", P, TX, "ends", "commit"),
    ("ROLLBACK", P, TX, "ends", "rollback"),
    ("ABORT", P, TX, "ends", "rollback"),
    ("COMMIT AND CHAIN", P, TX, "ends begins", "commit-and-chain"),
    ("PREPARE TRANSACTION 'gid'", P, TX, "ends", "prepare-transaction"),
    ("COMMIT PREPARED 'gid'", P, TX, "", "finish-prepared"),
    ("ROLLBACK PREPARED 'gid'", P, TX, "", "finish-prepared"),
    ("SAVEPOINT a", P, TX, "", "savepoint"),
    ("RELEASE SAVEPOINT a", P, TX, "", "savepoint"),
    ("ROLLBACK TO SAVEPOINT a", P, TX, "", "savepoint"),
    ("SET LOCAL x.y = 1", P, TX, "", "set-local"),
    ("SET LOCAL search_path = x", P, TX, "", "set-local"),
    ("SET CONSTRAINTS ALL DEFERRED", P, TX, "", "set-constraints"),
    # -- multi-statement strings
    ("SELECT 1; INSERT INTO t VALUES (1)", P, WRITE, "", "multi-statement"),
    ("SELECT 1; SELECT 2", R, READ, "", "multi-statement"),
    ("INSERT INTO t VALUES (1); SELECT * FROM t FOR UPDATE", P, MULTI, "", "multi-statement"),
    ("SELECT 1; SELECT nextval('s'); SELECT 2", P, VOLATILE, "", "multi-statement"),
    ("SET LOCAL statement_timeout = '1s'; SELECT * FROM t", R, READ, "", "multi-statement"),
    ("BEGIN READ ONLY; SELECT 1; COMMIT", R, MULTI, "", "multi-statement"),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", P, MULTI, "", "multi-statement"),
    ("BEGIN; INSERT INTO t VALUES (1)", P, MULTI, "begins", "multi-statement"),
    ("COMMIT; BEGIN READ ONLY", R, TX, "ends begins ro", "multi-statement"),
    ("SAVEPOINT a; RELEASE a", P, TX, "", "multi-statement"),
    ("SET search_path = x; SELECT 1", P, SESSION, "pins", "multi-statement"),
    # -- hints
    ("/* tierproxy:primary */ SELECT 1", P, HINT, "", "hint-primary"),
    ("/*tierproxy:primary*/SELECT 1", P, HINT, "", "hint-primary"),
    ("  /*  TierProxy : PRIMARY  */\nSELECT * FROM t", P, HINT, "", "hint-primary"),
    ("-- tierproxy:primary\nSELECT 1", P, HINT, "", "hint-primary"),
    ("/* app=web */ -- tierproxy:primary\nSELECT 1", P, HINT, "", "hint-primary"),
    ("/* tierproxy:primary */ BEGIN READ ONLY", P, HINT, "begins ro", "hint-primary"),
    ("/* tierproxy:primary */ SELECT 1; SELECT 2", P, HINT, "", "hint-primary"),
    ("/* tierproxy:replica */ SELECT 1", R, HINT, "", "hint-replica"),
    ("-- TIERPROXY:replica\nSELECT * FROM t", R, HINT, "", "hint-replica"),
    ("/* tierproxy:replica */ SELECT frobnicate FROM WHERE", R, HINT, "", "hint-replica"),
    # a replica hint never moves a write, a lock or a session change off the primary
    ("/* tierproxy:replica */ INSERT INTO t VALUES (1)", P, WRITE, "", "replica-hint-ignored"),
    ("/* tierproxy:replica */ SELECT nextval('s')", P, VOLATILE, "", "replica-hint-ignored"),
    ("/* tierproxy:replica */ SELECT * FROM t FOR UPDATE", P, LOCKING, "",
     "replica-hint-ignored"),
    ("/* tierproxy:replica */ SET search_path = x", P, SESSION, "pins", "replica-hint-ignored"),
    ("/* tierproxy:replica */ BEGIN", P, TX, "begins", "replica-hint-ignored"),
    # not hints: not leading, not exactly the hint, not a comment
    ("SELECT 1 /* tierproxy:primary */", R, READ, "", "select"),
    ("/* tierproxy:primary please */ SELECT 1", R, READ, "", "select"),
    ("/* tierproxy:master */ SELECT 1", R, READ, "", "select"),
    ("SELECT '/* tierproxy:primary */'", R, READ, "", "select"),
    ("/* outer /* tierproxy:primary */ still outer */ SELECT 1", R, READ, "", "select"),
    # -- empty, unparseable
    ("", R, EMPTY, "", "empty"),
    ("   \n\t ", R, EMPTY, "", "empty"),
    (";", R, EMPTY, "", "empty"),
    ("-- only a comment", R, EMPTY, "", "empty"),
    ("/* only */ /* comments */ ;;", R, EMPTY, "", "empty"),
    ("/* tierproxy:primary */", P, HINT, "", "hint-primary"),
    ("SELEC 1", P, UNPARSEABLE, "", "parse-error"),
    ("this is not sql", P, UNPARSEABLE, "", "parse-error"),
    ("SELECT (", P, UNPARSEABLE, "", "parse-error"),
    ("SELECT 1; garbage", P, UNPARSEABLE, "", "parse-error"),
    ("/* unterminated comment SELECT 1", P, UNPARSEABLE, "", "parse-error"),
    ("SELECT 1\x00; DROP TABLE t", P, UNPARSEABLE, "", "nul-byte"),
    ("SELECT '\ud800'", P, UNPARSEABLE, "", "parse-error"),
    ("SELECT " + "(" * 20_000 + "1" + ")" * 20_000, P, UNPARSEABLE, "", "parse-error"),
    ("SELECT " + "1 + " * 2_000 + "1", P, UNPARSEABLE, "", "too-deep"),
]
# fmt: on

FLAG_FIELDS = {
    "begins": "begins_transaction",
    "ro": "read_only_transaction",
    "ends": "ends_transaction",
    "pins": "pins_session",
}


def _row_id(row: tuple) -> str:
    return repr(row[0])[:60]


@pytest.mark.parametrize("sql,target,reason,flags,detail", ROWS, ids=[_row_id(r) for r in ROWS])
def test_routing_table(sql, target, reason, flags, detail):
    decision = classify(sql)
    expected = {field: name in flags.split() for name, field in FLAG_FIELDS.items()}
    got = {field: getattr(decision, field) for field in FLAG_FIELDS.values()}
    assert (decision.target, decision.reason, got) == (target, reason, expected), decision
    if detail is not None:
        assert decision.detail == detail


def test_table_is_big_and_has_no_duplicates():
    assert len(ROWS) >= 80
    sqls = [row[0] for row in ROWS]
    assert len(sqls) == len(set(sqls))


def _detail_is_known(detail: str) -> bool:
    return detail in DETAILS or detail.startswith("stmt:") and detail[5:].isidentifier()


def test_details_come_from_the_fixed_vocabulary():
    for sql, *_ in ROWS:
        assert _detail_is_known(classify(sql).detail), sql


def test_write_functions_are_configurable():
    mine = DEFAULT_WRITE_FUNCTIONS | {"create_order", "billing.charge"}
    assert classify("SELECT create_order(1)").target is R
    assert classify("SELECT create_order(1)", write_functions=mine).reason is VOLATILE
    assert classify("SELECT app.create_order(1)", write_functions=mine).target is P
    assert classify("SELECT billing.charge(1)", write_functions=mine).target is P
    assert classify("SELECT charge(1)", write_functions=mine).target is R  # other schema
    # Removing nextval from the list is the caller's choice...
    assert classify("SELECT nextval('s')", write_functions=frozenset()).target is R
    # ...but session pins are what the functions do, not configuration.
    assert classify("SELECT pg_advisory_lock(1)", write_functions=frozenset()).pins_session


def test_function_sets_are_lower_case_and_consistent():
    for name in DEFAULT_WRITE_FUNCTIONS | SESSION_PIN_FUNCTIONS | SESSION_RESET_FUNCTIONS:
        assert name == name.lower() and name.strip() == name
    assert SESSION_PIN_FUNCTIONS <= DEFAULT_WRITE_FUNCTIONS
    assert not SESSION_RESET_FUNCTIONS & DEFAULT_WRITE_FUNCTIONS
    assert "set_config" not in DEFAULT_WRITE_FUNCTIONS  # its own rule: see classify_functions
    assert {"random", "gen_random_uuid", "pg_sleep", "now"}.isdisjoint(DEFAULT_WRITE_FUNCTIONS)


def test_decision_is_frozen_and_hashable():
    decision = classify("SELECT 1")
    with pytest.raises(AttributeError):
        decision.target = P  # type: ignore[misc]
    assert decision == Decision(R, READ, detail="select")
    assert hash(decision) == hash(Decision(R, READ, detail="select"))


# -- properties --------------------------------------------------------------------------------

READS = [
    "SELECT 1",
    "SELECT * FROM t WHERE id = $1",
    "VALUES (1)",
    "TABLE t",
    "SHOW search_path",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "COPY t TO STDOUT",
    "EXPLAIN SELECT 1",
    "SELECT random()",
]
WRITES = [
    "INSERT INTO t VALUES (1)",
    "UPDATE t SET v = 'x'",
    "DELETE FROM t",
    "SELECT nextval('s')",
    "SELECT * FROM t FOR UPDATE",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "CREATE TABLE z (a int)",
    "SELECT 1 INTO z",
    "LOCK t",
    "SET search_path = x",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_never_raises_on_arbitrary_text(sql):
    decision = classify(sql)
    assert isinstance(decision, Decision)
    assert decision.detail != "classifier-error"
    assert _detail_is_known(decision.detail)


_TOKENS = [
    "SELECT", "INSERT", "INTO", "FROM", "WHERE", "WITH", "AS", "(", ")", ",", ";", "t", "x",
    "1", "$1", "'a'", "nextval", "FOR", "UPDATE", "DELETE", "RETURNING", "*", "BEGIN", "READ",
    "ONLY", "COMMIT", "SET", "LOCAL", "=", "/*", "*/", "--", "\n", "tierproxy:primary",
    "tierproxy:replica", "VALUES", "TABLE", "EXPLAIN", "ANALYZE", "COPY", "TO", "STDOUT",
]  # fmt: skip


@settings(max_examples=500)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25))
def test_never_raises_on_token_soup(tokens):
    decision = classify(" ".join(tokens))
    assert decision.detail != "classifier-error"
    assert _detail_is_known(decision.detail)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 100)), min_size=1, max_size=6))
def test_multi_statement_goes_to_primary_iff_any_part_writes(parts):
    sqls = [(WRITES if w else READS)[i % len(WRITES if w else READS)] for w, i in parts]
    decision = classify("; ".join(sqls))
    any_write = any(w for w, _ in parts)
    assert decision.target is (P if any_write else R), sqls
    assert decision.pins_session == ("SET search_path = x" in sqls)
    if len(sqls) > 1:
        assert decision.detail == "multi-statement"


@given(st.lists(st.sampled_from([r[0] for r in ROWS]) | st.text(max_size=30), max_size=40))
def test_cache_returns_what_classify_returns(sqls):
    cache = ClassifierCache(maxsize=8)
    for sql in sqls:
        assert cache.get(sql) == classify(sql)
        assert len(cache) <= 8
    assert cache.hits + cache.misses == len(sqls)


def test_cache_counts_hits_and_misses_and_returns_the_same_object():
    cache = ClassifierCache()
    first = cache.get("SELECT 1")
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.get("SELECT 1") is first
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.get("select 1") == first  # different text: a miss, equal decision
    assert (cache.hits, cache.misses) == (1, 2)


def test_cache_is_bounded_evicting_oldest_first():
    cache = ClassifierCache(maxsize=3)
    for i in range(3):
        cache.get(f"SELECT * FROM t{i}")
    cache.get("SELECT * FROM t3")  # evicts t0
    assert len(cache) == 3
    cache.get("SELECT * FROM t1")
    assert cache.hits == 1
    cache.get("SELECT * FROM t0")
    assert cache.hits == 1 and cache.misses == 5


def test_cache_shares_one_entry_for_dml_that_differs_in_numeric_literals():
    cache = ClassifierCache()
    for aid in (1, 4711, 99999):
        assert cache.get(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}").target is R
        assert cache.get(f"UPDATE pgbench_accounts SET abalance = abalance + {aid} WHERE aid = {aid}").target is P
    assert (cache.hits, cache.misses, len(cache)) == (4, 2, 2)
    # Where a number can matter, or the text is not one plain statement, the exact text is the key.
    for sql in ("EXPLAIN (ANALYZE 0) DELETE FROM t", "SET transaction_read_only = 1", "SELECT 1; SELECT 2", "SELECT 1;;SELECT 2;",
                "select $1::int", "select * from t1"):
        assert literal_key(sql) == sql
    # string literals too, and comments but for a hint, which stays (tests/unit/test_dbproxy_classify_key.py)
    assert literal_key("select x from t2 where a = 1.5e3 and b = 'x7';") == "select x from t2 where a = 0 and b = '';"
    assert literal_key("/* tierproxy:primary */ SELECT 1") == "/* tierproxy:primary */ SELECT 0"


@given(st.sampled_from([r[0] for r in ROWS]), st.integers(0, 10**12))
def test_literal_key_never_changes_a_decision(sql, number):
    # Replace the literals of every table row by another number: same decision as the original.
    varied = literal_key(sql).replace(" 0", f" {number}") if literal_key(sql) != sql else sql
    assert classify(literal_key(sql)) == classify(sql)
    assert classify(varied) == classify(sql)


@given(st.one_of(st.sampled_from([r[0] for r in ROWS]), st.text(max_size=80),
                 st.from_regex(r"\s*(select|SELECT|update) [a-z0-9_.$é ]{0,20}(=|,) ?[0-9.eE+-]{1,8}[a-z ;]{0,5}",
                               fullmatch=True),
                 st.builds(lambda a, b: a + b, st.sampled_from(["select ", " UPDATE\t", "with", "values(", "Table "]),
                           st.text(alphabet="ab1 2.;/*-\n\t\x0b\x1c$eé", max_size=20))))
def test_literal_key_bytes_agrees_with_literal_key(sql):
    raw = sql.encode("utf-8", "surrogatepass")  # a table row holds a lone surrogate
    key = literal_key_bytes(raw)
    if raw.isascii():
        # The same key, or (where Unicode and ASCII whitespace differ: \x1c-\x1f) the exact text.
        assert key.decode() in (literal_key(sql), sql)
        if key != raw:
            assert key.decode() == literal_key(sql)
    else:
        assert key == raw  # non-ASCII text is never literal-keyed


def test_cache_get_bytes_matches_get_and_counts():
    cache = ClassifierCache()
    for row in ROWS:
        sql = row[0].encode("utf-8", "replace").decode()  # a row with a lone surrogate: as a client could send it
        assert cache.get_bytes(sql.encode()) == classify(sql)
    for aid in (1, 4711):
        assert cache.get_bytes(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};".encode()).target is R
        assert cache.get_bytes(f"update t set a = {aid} where b = {aid}".encode()).target is P
    hits = cache.hits
    assert cache.get_bytes(b"SELECT abalance FROM pgbench_accounts WHERE aid = 99;").target is R
    assert cache.get_bytes("SELECT nextval('s') -- é".encode()).target is P
    assert cache.get_bytes("SELECT nextval('s') -- é".encode()).target is P
    assert cache.hits == hits + 2


def test_cache_skips_very_long_texts_and_uses_its_write_functions():
    cache = ClassifierCache(write_functions=DEFAULT_WRITE_FUNCTIONS | {"touch"})
    long_sql = "SELECT 1" + ", 1" * 10_000
    assert cache.get(long_sql).target is R
    assert len(cache) == 0
    assert cache.get("SELECT touch()").target is P
    with pytest.raises(ValueError, match="maxsize"):
        ClassifierCache(maxsize=0)


@pytest.mark.parametrize(
    "sql,target,begins,read_only",
    [
        ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1", R, True, True),
        # Begun and committed inside the string: nothing is left open, nothing read-only.
        ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1; COMMIT", R, False, False),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE; SET TRANSACTION READ ONLY", P, True, True),
        ("BEGIN; SET TRANSACTION READ ONLY; INSERT INTO t VALUES (1)", P, True, True),
        ("BEGIN; SELECT 1; SET TRANSACTION READ ONLY", P, True, True),
        ("BEGIN; SELECT 1", P, True, False),
    ],
)
def test_begin_then_set_transaction_read_only_in_one_string_is_a_read_only_transaction(sql, target, begins, read_only):
    # The exact verdict: both flags, whatever the other says.
    d = classify(sql)
    assert (d.target, d.begins_transaction, d.read_only_transaction) == (target, begins, read_only)
