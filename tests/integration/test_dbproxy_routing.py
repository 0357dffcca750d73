"""The routing table of `tierproxy dbproxy`, row by row, against a real primary and two replicas.

Where a statement ran is the server's own word: each statement returns `inet_server_port()` (or
`SHOW port`), or is a write that a hot standby would refuse (25006), so its success proves the
primary. Statements that cannot carry evidence (SQL that does not parse) are checked through the
proxy's statement counters, which record the backend each statement was sent to.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter

import asyncpg
import psycopg
import pytest

from proxy.devstack.poll import wait_until

TABLE = "routing_t"


@pytest.fixture(scope="module")
def ports(pg_cluster, dbproxy):
    pg_cluster.primary.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id int PRIMARY KEY, v int);"
        f"INSERT INTO {TABLE} VALUES (1, 0); DROP SEQUENCE IF EXISTS routing_seq; CREATE SEQUENCE routing_seq;"
    )
    pg_cluster.wait_for_replicas_caught_up()
    return {"primary": pg_cluster.primary.port, "replicas": {r.port for r in pg_cluster.replicas}}


def _connect(dbproxy) -> psycopg.Connection:
    return psycopg.connect(dbproxy.dsn(), autocommit=True)


def _last_value(cur: psycopg.Cursor) -> int:
    """The first column of the last result set of a (possibly multi-statement) query."""
    value = None
    while True:
        if cur.description is not None:
            rows = cur.fetchall()
            if rows:
                value = rows[-1][0]
        if not cur.nextset():
            break
    return int(value)


def _where(ports, port: int) -> str:
    if port == ports["primary"]:
        return "primary"
    assert port in ports["replicas"], f"port {port} is none of the cluster's servers"
    return "replica"


# (SQL whose last result's first column is the server's port, where it must run)
ROWS = [
    ("SELECT inet_server_port()", "replica"),
    ("select inet_server_port() from routing_t where id = 1", "replica"),
    ("VALUES (inet_server_port())", "replica"),
    ("SHOW port", "replica"),
    ("WITH a AS (SELECT inet_server_port() AS p) SELECT p FROM a", "replica"),
    ("SELECT inet_server_port() FROM routing_t t1 JOIN routing_t t2 USING (id)", "replica"),
    ("/* tierproxy:replica */ SELECT inet_server_port()", "replica"),
    ("/* tierproxy:primary */ SELECT inet_server_port()", "primary"),
    ("INSERT INTO routing_t VALUES (1000 + (random() * 1e6)::int, 1) RETURNING inet_server_port()", "primary"),
    ("UPDATE routing_t SET v = v + 1 WHERE id = 1 RETURNING inet_server_port()", "primary"),
    ("DELETE FROM routing_t WHERE id = -1; SELECT inet_server_port()", "primary"),
    ("SELECT inet_server_port() FROM routing_t WHERE id = 1 FOR UPDATE", "primary"),
    ("SELECT inet_server_port() FROM routing_t WHERE id = 1 FOR SHARE", "primary"),
    ("SELECT nextval('routing_seq') * 0 + inet_server_port()", "primary"),
    ("SELECT setval('routing_seq', 5) * 0 + inet_server_port()", "primary"),
    ("SELECT inet_server_port() FROM (SELECT nextval('routing_seq')) s", "primary"),
    ("WITH w AS (UPDATE routing_t SET v = v WHERE id = 1 RETURNING 1) SELECT inet_server_port() FROM w", "primary"),
    ("SELECT 1; UPDATE routing_t SET v = v WHERE id = 1; SELECT inet_server_port()", "primary"),
    ("LOCK TABLE routing_t IN SHARE MODE; SELECT inet_server_port()", "primary"),
    ("NOTIFY routing_channel; SELECT inet_server_port()", "primary"),
    ("SELECT inet_server_port(), pg_notify('routing_channel', 'x')", "primary"),
    ("CREATE TABLE IF NOT EXISTS routing_ddl (a int); SELECT inet_server_port()", "primary"),
    ("SELECT 1 INTO TEMP routing_into; SELECT inet_server_port()", "primary"),
    ("BEGIN; SELECT inet_server_port(); COMMIT", "primary"),
    ("BEGIN READ ONLY; SELECT inet_server_port(); COMMIT", "replica"),
    ("START TRANSACTION READ ONLY; SELECT inet_server_port(); COMMIT", "replica"),
    ("BEGIN; SET TRANSACTION READ ONLY; SELECT inet_server_port(); COMMIT", "replica"),
]


@pytest.mark.parametrize("sql,target", ROWS, ids=[re.sub(r"\W+", "_", r[0])[:60] for r in ROWS])
def test_routing_table_simple_protocol(dbproxy, ports, sql, target):
    # A fresh session per row: pinning statements must not leak into the next row.
    with _connect(dbproxy) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert _where(ports, _last_value(cur)) == target


@pytest.mark.parametrize(
    "sql,args,target",
    [
        ("SELECT inet_server_port() + $1::int", (0,), "replica"),
        ("SELECT inet_server_port() FROM routing_t WHERE id = $1", (1,), "replica"),
        ("SELECT inet_server_port() FROM routing_t WHERE id = $1 FOR UPDATE", (1,), "primary"),
        ("UPDATE routing_t SET v = $1 WHERE id = 1 RETURNING inet_server_port()", (7,), "primary"),
        ("SELECT nextval('routing_seq') * $1 + inet_server_port()", (0,), "primary"),
        ("/* tierproxy:primary */ SELECT inet_server_port() + $1::int", (0,), "primary"),
    ],
)
async def test_routing_table_extended_protocol(dbproxy, ports, sql, args, target):
    conn = await asyncpg.connect(dbproxy.dsn())
    try:
        for _ in range(3):  # prepared once, then executed from the statement cache
            assert _where(ports, await conn.fetchval(sql, *args)) == target
    finally:
        await conn.close()


def _statements(dbproxy) -> Counter:
    with urllib.request.urlopen(f"http://127.0.0.1:{dbproxy.admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Counter = Counter()
    for m in re.finditer(r'^tierproxy_dbproxy_statements_total\{backend="([^"]+)",reason="([^"]+)",'
                         r'role="[^"]+"\} ([0-9.e+]+)$', text, re.MULTILINE):  # fmt: skip
        out[(m.group(1), m.group(2))] += float(m.group(3))
    return out


def test_unparseable_sql_goes_to_the_primary_which_answers_the_error(dbproxy, ports):
    with _connect(dbproxy) as conn:
        before = _statements(dbproxy)
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC inet_server_port() FROMM nowhere")
        delta = _statements(dbproxy) - before
        assert delta == Counter({("primary", "write"): 1})
        # and the session goes on
        assert _where(ports, conn.execute("SELECT inet_server_port()").fetchone()[0]) == "replica"


def test_session_changing_statements_pin_the_session_to_the_primary(dbproxy, ports):
    for pin in ("SET application_name = 'pinned'", "LISTEN routing_pin", "PREPARE p AS SELECT 1",
                "CREATE TEMP TABLE routing_tmp (a int)", "SELECT pg_advisory_lock(42)"):  # fmt: skip
        with _connect(dbproxy) as conn:
            assert _where(ports, conn.execute("SELECT inet_server_port()").fetchone()[0]) == "replica"
            conn.execute(pin)
            for _ in range(3):
                assert _where(ports, conn.execute("SELECT inet_server_port()").fetchone()[0]) == "primary", pin


def test_a_transaction_stays_on_one_backend_and_reads_spread_afterwards(dbproxy_statement, ports):
    # balance = "statement": reads spread over the replicas statement by statement.
    with _connect(dbproxy_statement) as conn:
        conn.execute("BEGIN READ ONLY")
        seen = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(6)}
        conn.execute("COMMIT")
        assert len(seen) == 1 and _where(ports, seen.pop()) == "replica"
        conn.execute("BEGIN")
        seen = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(3)}
        conn.execute("ROLLBACK")
        assert seen == {ports["primary"]}
        # Outside transactions, reads use both replicas and nothing else. Both: as soon as both
        # have replayed the session's last transaction (read-your-writes may hold one back while
        # it catches up with the primary's WAL position, a matter of milliseconds).
        spread: set[int] = set()

        def both_replicas() -> bool:
            spread.update(conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(4))
            return ports["replicas"] <= spread

        wait_until(both_replicas, timeout=15, what="reads on both replicas")
        assert spread == ports["replicas"]


def test_psycopg_read_only_transactions_use_replicas(dbproxy, ports):
    # psycopg opens a transaction before the first statement; read_only makes it BEGIN READ ONLY.
    with psycopg.connect(dbproxy.dsn()) as conn:
        conn.read_only = True
        assert _where(ports, conn.execute("SELECT inet_server_port()").fetchone()[0]) == "replica"
        conn.commit()
        conn.read_only = False
        assert _where(ports, conn.execute("SELECT inet_server_port()").fetchone()[0]) == "primary"
