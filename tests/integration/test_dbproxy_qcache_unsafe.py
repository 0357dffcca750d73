"""End to end through a real dbproxy and PostgreSQL (issue 20): a statement that is unsafe to cache
is never served from the cache, whatever rule or hint names its table (hypothesis over generated
statements, compared with the classifier and with what the generator put in).

Each example runs one generated statement twice, over the simple or the extended protocol, with
a write made directly on the primary (bypassing the proxy) in between: the second answer carrying
the old value means it came from the cache. The proxy's rule caches every statement that reads
only `qh`, and the generator adds the hint at random, so only the safety checks stand between an
unsafe statement and the cache."""

from __future__ import annotations

import itertools

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify import classify
from proxy.dbproxy.classify_types import Reason, Target
from tests.integration.qcacheproc import purge_all

CONFIG = '[cache]\nenabled = true\n[[cache.rules]]\ntables = ["qh"]\nttl = 60\n'
SAFE_ITEMS = ["v + 0", "lower(w)", "coalesce(v, 0)", "'x'", "length(w)"]
UNSAFE_ITEMS = ["random()", "now()", "clock_timestamp()", "CURRENT_DATE", "current_user", "nextval('qh_seq')",
                "txid_current()", "statement_timestamp()", "gen_random_uuid()", "current_setting('TimeZone')",
                "pg_backend_pid()", "timeofday()"]  # fmt: skip
SAFE_TAILS = ["", " WHERE id = 1", " ORDER BY id LIMIT 1", " WHERE w IS NOT NULL"]
UNSAFE_TAILS = [" FOR UPDATE", " FOR SHARE", " FOR NO KEY UPDATE", " WHERE id = 1 FOR KEY SHARE"]
UNSAFE_WRAPS = ["WITH x AS (UPDATE qh SET w = w RETURNING 1) {}", "WITH x AS (SELECT nextval('qh_seq')) {}"]
# Weighted towards the cases where only the statement's own safety decides (no transaction, a safe
# tail), so that 15 examples exercise each check.
TRANSACTIONS = ["none", "none", "none", "read-write", "read-only"]


@st.composite
def statements(draw):
    unsafe = False
    items = ["v"]
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            items.append(draw(st.sampled_from(UNSAFE_ITEMS)))
            unsafe = True
        else:
            items.append(draw(st.sampled_from(SAFE_ITEMS)))
    tail = draw(st.sampled_from(UNSAFE_TAILS)) if draw(st.integers(0, 3)) == 0 else draw(st.sampled_from(SAFE_TAILS))
    unsafe |= tail in UNSAFE_TAILS
    sql = f"SELECT {', '.join(items)} FROM qh{tail}"
    if draw(st.integers(0, 5)) == 0:
        sql = draw(st.sampled_from(UNSAFE_WRAPS)).format(sql)
        unsafe = True
    if draw(st.booleans()):
        sql = "/* tierproxy:cache ttl=60 */ " + sql
    return sql, unsafe


@pytest.fixture(scope="module")
def setup(pg_cluster, tmp_path_factory):
    from proxy.devstack.dbproxy import start_dbproxy

    pg_cluster.primary.psql("DROP TABLE IF EXISTS qh, qh_other; DROP SEQUENCE IF EXISTS qh_seq;"
                            "CREATE TABLE qh (id int PRIMARY KEY, v int, w text); INSERT INTO qh VALUES (1, 0, 'a');"
                            "CREATE TABLE qh_other (id int); CREATE SEQUENCE qh_seq")  # fmt: skip
    pg_cluster.wait_for_replicas_caught_up()
    proxy = start_dbproxy(pg_cluster, log_dir=tmp_path_factory.mktemp("qh"), users={"app": "app-secret"},
                          extra=CONFIG)  # fmt: skip
    try:
        yield pg_cluster, proxy, itertools.count(1)
    finally:
        proxy.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(generated=statements(), extended=st.booleans(), txn=st.sampled_from(TRANSACTIONS))
def test_an_unsafe_statement_is_never_served_from_the_cache(setup, generated, extended, txn):
    cluster, proxy, counter = setup
    sql, unsafe = generated
    decision = classify(sql)

    def bypass() -> int:
        value = next(counter)
        with psycopg.connect(cluster.primary.dsn, autocommit=True) as direct:
            direct.execute("UPDATE qh SET v = %s", (value,))
        cluster.wait_for_replicas_caught_up()
        return value

    # A statement drawn again would find its entry from an earlier example: start empty.
    purge_all(proxy)

    cursor = None if extended else psycopg.ClientCursor
    with psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=cursor, prepare_threshold=None) as conn:

        def run() -> int | None:
            """The statement's v, or None for the server's error (a write in a read-only
            transaction: also what a direct connection answers)."""
            if txn != "none":
                conn.execute("BEGIN" if txn == "read-write" else "BEGIN READ ONLY")
                if txn == "read-write":
                    conn.execute("INSERT INTO qh_other VALUES (1)")
            try:
                value = conn.execute(sql).fetchone()[0]
            except psycopg.errors.ReadOnlySqlTransaction:
                assert txn == "read-only" and decision.target is Target.PRIMARY, sql
                value = None
            if txn != "none":
                conn.execute("COMMIT")  # after an error: ends the failed transaction (a ROLLBACK)
            return value

        first = bypass()
        got = run()
        assert got in (first, None)
        second = bypass()
        served = got is not None and run() == first  # the database says `second`
    if served:
        assert decision.target is Target.REPLICA and decision.reason is Reason.READ, sql
    if unsafe or txn != "none" or decision.reason is not Reason.READ:
        assert not served, (sql, txn, extended)
    else:
        assert served, (sql, txn, extended)  # not vacuous: safe statements the rule names are cached
    assert second != first
