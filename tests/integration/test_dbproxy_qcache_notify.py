"""The query cache and writes that bypass the proxy (issue 20): the trigger docs/dbproxy.md shows
sends NOTIFY on every write, `[cache.listen]` makes the dbproxy LISTEN and invalidate. Real
PostgreSQL; the writes are made directly on the primary with psql, never through the proxy.

No fixed sleeps: the test polls (the listener's backend in pg_stat_activity, the proxy's answer)
with a deadline well below the entries' TTL (60 s), so a value that changes before the deadline
was invalidated, not expired."""

from __future__ import annotations

import time
import urllib.request

import psycopg
import pytest

# The trigger exactly as docs/dbproxy.md shows it.
TRIGGER = """
CREATE OR REPLACE FUNCTION tierproxy_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tierproxy_cache', TG_TABLE_NAME);
  RETURN NULL;
END $$;
CREATE TRIGGER qn_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON qn
  FOR EACH STATEMENT EXECUTE FUNCTION tierproxy_cache_notify();
"""
READ = "/* tierproxy:cache ttl=60 */ SELECT v FROM qn WHERE id = 1"
DEADLINE = 15.0


@pytest.fixture
def cluster(pg_cluster):
    pg_cluster.primary.psql("DROP TABLE IF EXISTS qn, qn_quiet; CREATE TABLE qn (id int PRIMARY KEY, v int);"
                            "INSERT INTO qn VALUES (1, 1); CREATE TABLE qn_quiet (id int PRIMARY KEY, v int);"
                            "INSERT INTO qn_quiet VALUES (1, 1);" + TRIGGER)  # fmt: skip
    pg_cluster.wait_for_replicas_caught_up()
    return pg_cluster


def _listener_pid(cluster) -> int | None:
    out = cluster.primary.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %tierproxy_cache%'"
                               " AND pid <> pg_backend_pid()").strip()  # fmt: skip
    return int(out.splitlines()[0]) if out else None


def _metric(proxy, name) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"tierproxy_dbproxy_query_cache_{name} "):
                return float(line.split()[-1])
    return -1.0


def _until(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"not within {DEADLINE:g}s: {what}")


def _direct(cluster, sql):
    cluster.primary.psql(sql)
    cluster.wait_for_replicas_caught_up()


def test_a_direct_write_notifies_and_the_proxy_invalidates(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster, extra='[cache]\nenabled = true\n[cache.listen]\ndatabases = ["postgres"]\n')
    # Listening, and the cache dropped once for it (as on every connection): the proxy says so.
    _until(lambda: _metric(proxy, "listening") == 1 and _metric(proxy, "listen_connects_total") == 1, "LISTEN")
    first = _listener_pid(cluster)
    assert first is not None
    with psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:

        def value(sql=READ):
            return conn.execute(sql).fetchone()[0]

        quiet = "/* tierproxy:cache ttl=60 */ SELECT v FROM qn_quiet WHERE id = 1"
        assert value() == 1 and value(quiet) == 1
        _direct(cluster, "UPDATE qn_quiet SET v = 2")  # no trigger on this table: served from the cache
        assert value(quiet) == 1
        _direct(cluster, "UPDATE qn SET v = 2")  # the trigger's NOTIFY reaches the proxy
        _until(lambda: value() == 2, "the direct UPDATE's value through the cache")
        assert value(quiet) == 1  # only the notified table was dropped
        _direct(cluster, "DELETE FROM qn; INSERT INTO qn VALUES (1, 3)")
        _until(lambda: value() == 3, "the direct DELETE + INSERT")
        # The listener's connection killed: it comes back, and drops everything when it does
        # (notifications sent while it was away are lost).
        cluster.primary.psql(f"SELECT pg_terminate_backend({first})")
        _until(lambda: _metric(proxy, "listen_connects_total") == 2, "the dbproxy LISTENs again")
        assert _listener_pid(cluster) not in (None, first)
        _until(lambda: value(quiet) == 2, "everything dropped on reconnection")
        _direct(cluster, "TRUNCATE qn; INSERT INTO qn VALUES (1, 4)")
        _until(lambda: value() == 4, "the direct TRUNCATE after the reconnection")
        assert _metric(proxy, "notifications_total") >= 3
