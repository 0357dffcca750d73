"""SIGTERM under load (issue 12, item 12): every client connected to `tierproxy dbproxy` gets
FATAL 57P01 "terminating connection due to administrator command", none a bare close.

Under load: pgbench clients in a loop, a client whose statement outlives `timeouts.drain`, and a
client streaming a large result it has not read yet when the drain ends (what the proxy buffered
for it, and the FATAL behind it, must still reach it after the drain deadline).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import psycopg
import pytest

from proxy.devstack.poll import wait_until
from proxy.pgwire import encode
from proxy.pgwire.messages import DataRow, ErrorResponse
from tests.integration.pgraw import RawPg

PGBENCH = shutil.which("pgbench")
CLIENTS = 8
SLEEP_SQL = "SELECT pg_sleep(60) /* drain sleeper */"
BIG_SQL = "SELECT repeat('x', 1000) FROM generate_series(1, 20000) /* drain reader */"


def _running(pg_cluster, sql: str) -> bool:
    for server in pg_cluster.servers:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            if admin.execute("SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'active'",
                             (sql,)).fetchone():  # fmt: skip
                return True
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_gives_every_connected_client_57p01(pg_cluster, dbproxy_factory, tmp_path, workers):
    assert PGBENCH is not None, "pgbench is needed (Debian package postgresql-client)"
    proxy = dbproxy_factory(pg_cluster, extra="[timeouts]\ndrain = 1.0\n", workers=workers)
    script = tmp_path / "load.sql"
    script.write_text("\\set r random(1, 1000)\nSELECT :r, count(*) FROM pg_class;\n")
    bench = subprocess.Popen(
        [PGBENCH, "-n", "-c", str(CLIENTS), "-j", "2", "-T", "120", "-M", "extended", "-f", str(script),
         "-h", proxy.host, "-p", str(proxy.port), "-U", "app", "postgres"],
        env={**os.environ, "PGPASSWORD": "app-secret"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sleeper = RawPg(proxy.host, proxy.port, "app", "app-secret")
    reader = RawPg(proxy.host, proxy.port, "app", "app-secret")
    try:
        sleeper.send(encode.query(SLEEP_SQL))
        reader.send(encode.query(BIG_SQL))  # not read until the drain deadline has passed
        wait_until(lambda: proxy.status()["clients"] == CLIENTS + 2, 30, "every client logged in")
        wait_until(lambda: _running(pg_cluster, SLEEP_SQL) and _running(pg_cluster, BIG_SQL), 30,
                   "both long statements running")  # fmt: skip
        proxy.process.send_terminate()
        # The sleeper is busy past timeouts.drain: it gets its FATAL at the deadline.
        got = sleeper.until(ErrorResponse, timeout=30)[-1]
        assert (got.severity, got.sqlstate) == ("FATAL", "57P01"), got
        sleeper.sock.close()
        # The reader's FATAL was queued at the same moment behind the rows the proxy held for it:
        # it reads them all, then the FATAL, then the close.
        msgs = []
        while (m := reader.recv(30)) is not None:
            msgs.append(m)
        assert reader.closed
        assert any(isinstance(m, DataRow) for m in msgs)
        assert isinstance(msgs[-1], ErrorResponse), [type(m).__name__ for m in msgs[-3:]]
        assert (msgs[-1].severity, msgs[-1].sqlstate) == ("FATAL", "57P01")
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        sleeper.sock.close()
        reader.sock.close()
    aborted = {int(n) for n in re.findall(r"client (\d+)\b[^\n]*aborted", err)}
    assert aborted == set(range(CLIENTS)), err
    assert err.count("terminating connection due to administrator command") >= CLIENTS, err
    for bare in ("closed the connection unexpectedly", "could not receive data", "Connection reset"):
        assert bare not in err, err
    wait_until(lambda: not proxy.process.running, 30, "dbproxy to exit after SIGTERM")
    assert proxy.process.returncode == 0, proxy.process.log_tail()
