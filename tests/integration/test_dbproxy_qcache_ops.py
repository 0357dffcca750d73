"""The query cache's config rules and its operators' side (issue 20), against real PostgreSQL:
`[[cache.rules]]` by table and by fingerprint, `SHOW CACHE` through psql, `POST /cache/purge`
with curl, and the `tierproxy_dbproxy_query_cache_*` metrics.

As in test_dbproxy_qcache.py, a write made directly on the primary (bypassing the proxy) is how a
test sees that an answer came from the cache: the database has the new value, the cache the old."""

from __future__ import annotations

import subprocess
import urllib.request

import psycopg
import pytest

RULES = """[cache]
enabled = true
[[cache.rules]]
tables = ["qo_items"]
ttl = 60
[[cache.rules]]
statement = "SELECT v FROM qo_fp WHERE id = 1"
ttl = 60
"""


@pytest.fixture
def cluster(pg_cluster):
    pg_cluster.primary.psql(
        "DROP TABLE IF EXISTS qo_items, qo_fp, qo_other;"
        "CREATE TABLE qo_items (id int PRIMARY KEY, v int); INSERT INTO qo_items VALUES (1, 1), (2, 2);"
        "CREATE TABLE qo_fp (id int PRIMARY KEY, v int); INSERT INTO qo_fp VALUES (1, 1), (2, 2);"
        "CREATE TABLE qo_other (id int PRIMARY KEY, v int); INSERT INTO qo_other VALUES (1, 1)"
    )
    pg_cluster.wait_for_replicas_caught_up()
    return pg_cluster


def _bypass(cluster, table, v):
    cluster.primary.psql(f"UPDATE {table} SET v = {v}")
    cluster.wait_for_replicas_caught_up()


def _psql(proxy, sql, database="tierproxy"):
    env = {"PGPASSWORD": proxy.users["app"], "PATH": "/usr/bin:/bin:/usr/lib/postgresql/16/bin"}
    out = subprocess.run(["psql", "-X", "-A", "-F", "|", "-h", proxy.host, "-p", str(proxy.port), "-U", "app",
                          "-d", database, "-c", sql], capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def _show_cache(proxy):
    lines = _psql(proxy, "SHOW CACHE").splitlines()
    header = lines[0].split("|")
    return {row.split("|")[0]: dict(zip(header, row.split("|"))) for row in lines[1:-1]}


def _curl(proxy, path, *args):
    out = subprocess.run(["curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", *args,
                          f"http://127.0.0.1:{proxy.admin_port}{path}"], capture_output=True, text=True, timeout=30)  # fmt: skip
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def _metrics(proxy):
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tierproxy_dbproxy_query_cache_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_rules_show_cache_purge_and_metrics(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster, extra=RULES)
    with psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:

        def value(sql):
            return conn.execute(sql).fetchone()[0]

        # By table: no hint, cached because the rule names qo_items.
        assert value("SELECT v FROM qo_items WHERE id = 1") == 1
        _bypass(cluster, "qo_items", 5)
        assert value("SELECT v FROM qo_items WHERE id = 1") == 1  # a hit
        assert value("SELECT v FROM qo_items WHERE id = 2") == 5  # another key: a miss
        # A join with a table no rule names is not cached.
        join = "SELECT i.v FROM qo_items i JOIN qo_other o USING (id)"
        assert value(join) == 5
        _bypass(cluster, "qo_other", 2)
        _bypass(cluster, "qo_items", 6)
        assert value(join) == 6
        # By fingerprint: other constants, spacing and comments, the same fingerprint.
        assert value("SELECT  v FROM qo_fp\n WHERE id=2") == 2
        _bypass(cluster, "qo_fp", 7)
        assert value("/* page */ SELECT v FROM qo_fp WHERE id = 2") == 2  # the same key (comments out)
        assert value("SELECT v FROM qo_fp WHERE id = 1") == 7  # another key: a miss, stored
        assert value("SELECT v, id FROM qo_fp WHERE id = 1") == 7  # another fingerprint: never cached
        _bypass(cluster, "qo_fp", 8)
        assert value("SELECT v, id FROM qo_fp WHERE id = 1") == 8
        # A FOR UPDATE of a ruled table is never cached.
        assert value("SELECT v FROM qo_items WHERE id = 1 FOR UPDATE") == 6
        _bypass(cluster, "qo_items", 9)
        assert value("SELECT v FROM qo_items WHERE id = 1 FOR UPDATE") == 9

        show = _show_cache(proxy)
        assert show["*"]["entries"] == "4", show  # items id 1, 2; fp id 1, 2
        assert int(show["*"]["hits"]) == 2 and int(show["*"]["misses"]) == 4, show
        assert show["qo_items"]["entries"] == "2" and show["qo_items"]["hits"] == "1", show
        assert show["qo_fp"]["entries"] == "2" and show["qo_fp"]["misses"] == "2", show
        assert int(show["qo_items"]["bytes"]) > 0 and int(show["*"]["bytes"]) >= int(show["qo_items"]["bytes"])

        # A write through the proxy invalidates: counted per table.
        conn.execute("UPDATE qo_fp SET v = 10 WHERE id = 1")
        assert value("SELECT v FROM qo_fp WHERE id = 1") == 10
        show = _show_cache(proxy)
        assert show["qo_fp"]["invalidations"] == "2" and show["qo_fp"]["entries"] == "1", show

        # Purge by table: refused without the JSON content type (the admin guard), then done.
        assert _curl(proxy, "/cache/purge?table=QO_ITEMS", "-X", "POST")[0] == 415
        code, body = _curl(proxy, "/cache/purge", "-X", "POST", "-H", "Content-Type: application/json")
        assert code == 400 and "table=" in body
        code, body = _curl(proxy, "/cache/purge?table=QO_ITEMS", "-X", "POST", "-H", "Content-Type: application/json")
        assert code == 200 and '"purged": 2' in body and '"qo_items"' in body, body
        assert value("SELECT v FROM qo_items WHERE id = 1") == 9  # the database's value again
        assert value("SELECT v FROM qo_fp WHERE id = 1") == 10  # other tables kept theirs
        _bypass(cluster, "qo_fp", 11)
        assert value("SELECT v FROM qo_fp WHERE id = 1") == 10
        code, body = _curl(proxy, "/cache/purge?all=1", "-X", "POST", "-H", "Content-Type: application/json")
        assert code == 200, body
        assert value("SELECT v FROM qo_fp WHERE id = 1") == 11

        m = _metrics(proxy)
        assert m["tierproxy_dbproxy_query_cache_hits_total"] == 4, m
        assert m["tierproxy_dbproxy_query_cache_misses_total"] == 7, m
        assert m["tierproxy_dbproxy_query_cache_purges_total"] == 2, m
        assert m['tierproxy_dbproxy_query_cache_invalidations_total{table="qo_items"}'] == 2, m
        assert m['tierproxy_dbproxy_query_cache_invalidations_total{table="qo_fp"}'] == 2, m
        assert m["tierproxy_dbproxy_query_cache_entries"] == 1 and m["tierproxy_dbproxy_query_cache_bytes"] > 0, m
        assert "tierproxy_dbproxy_query_cache_evictions_total" in m


def test_purge_and_show_cache_with_the_cache_off(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster)
    code, body = _curl(proxy, "/cache/purge?table=t", "-X", "POST", "-H", "Content-Type: application/json")
    assert code == 409 and "off" in body
    assert _psql(proxy, "SHOW CACHE").splitlines()[-1] == "(0 rows)"
    assert not any(k.startswith("tierproxy_dbproxy_query_cache_") for k in _metrics(proxy))
