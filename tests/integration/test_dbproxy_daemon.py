"""`tierproxy dbproxy` as a daemon: config errors, /metrics, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from proxy.devstack.poll import wait_until
from tests.integration.lbproc import REPO
from tests.integration.test_dbproxy_clients import _psql


def test_check_config_reports_located_errors(tmp_path):
    bad = tmp_path / "dbproxy.toml"
    bad.write_text(
        'listen = "127.0.0.1:6432"\n[primary]\naddress = "127.0.0.1:5432"\n'
        '[[replicas]]\nname = "r1"\naddress = "127.0.0.1:99999"\n'
        '[routing]\nread_your_writes = "sometimes"\nbogus = 1\n'
        '[backend_auth]\nuser = "tierproxy"\n[auth.users.app]\npassword = "x"\n'
    )
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "replicas.0.address" in r.stderr or "replicas[0].address" in r.stderr, r.stderr
    assert "routing.read_your_writes" in r.stderr and "routing.bogus" in r.stderr, r.stderr
    good = tmp_path / "good.toml"
    good.write_text((REPO / "deploy" / "config" / "dbproxy.toml").read_text())
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(good)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "ok (dbproxy)" in r.stdout, r.stderr


def _metrics(proxy) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_metrics_are_valid_prometheus_text_and_count_what_happened(dbproxy):
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        conn.execute("/* tierproxy:primary */ SELECT 1")
    text = _metrics(dbproxy)
    for name in ("tierproxy_dbproxy_statements_total", "tierproxy_dbproxy_backend_up",
                 "tierproxy_dbproxy_replica_lag_bytes", "tierproxy_dbproxy_server_connections",
                 "tierproxy_dbproxy_query_duration_seconds_bucket", "tierproxy_dbproxy_classifier_cache_total"):  # fmt: skip
        assert name in text, name
    assert 'tierproxy_dbproxy_statements_total{backend="primary",reason="hint",role="primary"}' in text
    assert 'tierproxy_dbproxy_backend_up{backend="replica2"} 1.0' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed (Debian package prometheus)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def _reads(proxy, n: int = 6) -> set[int]:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        return {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(n)}


def test_sighup_reload_applies_a_new_config_and_keeps_sessions(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra='[routing]\nbalance = "statement"\n')  # reads on both replicas
    assert _reads(proxy) == {r.port for r in pg_cluster.replicas}
    with psycopg.connect(proxy.dsn(), autocommit=True) as kept:
        # Take the replicas out of the config: reads fall back to the primary.
        text = proxy.config_path.read_text()
        start = text.index("[[replicas]]")
        end = text.index("[auth]")
        proxy.config_path.write_text(text[:start] + text[end:])
        os.kill(proxy.process.pid, signal.SIGHUP)
        wait_until(lambda: len(proxy.status()["backends"]) == 1, 15, "the reload")
        assert _reads(proxy) == {pg_cluster.primary.port}
        assert kept.execute("SELECT 'same session'").fetchone() == ("same session",)


def test_sighup_reload_applies_a_new_query_timeout(pg_cluster, dbproxy_factory):
    # The daemon reads timeouts.query per statement from a plain attribute that reload keeps.
    proxy = dbproxy_factory(pg_cluster)
    reloads = proxy.process.log_path.read_text().count('"reloaded"')
    proxy.config_path.write_text(proxy.config_path.read_text() + "[timeouts]\nquery = 1.0\n")
    os.kill(proxy.process.pid, signal.SIGHUP)
    wait_until(lambda: proxy.process.log_path.read_text().count('"reloaded"') > reloads, 15, "the reload")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)


def test_sigterm_tells_idle_clients_and_exits_cleanly(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster)
    conn = psycopg.connect(proxy.dsn(), autocommit=True)
    # libpq hands a FATAL that it reads while the connection is idle (in the same read as the
    # previous result, when the drain answers right after it) to the notice processor, as psql
    # shows a server's idle termination; one read while a query waits is the query's error.
    # (A Diagnostic is only valid during the callback: its fields are copied out there.)
    notices: list[tuple[str | None, str | None]] = []
    conn.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
    conn.execute("SELECT 1")
    proxy.process.send_terminate()
    refused: list[psycopg.OperationalError] = []

    def told_to_go() -> bool:
        # The FATAL arrives with the next read of the socket after the proxy sends it.
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            refused.append(exc)
        return bool(refused)

    wait_until(told_to_go, 10, "the FATAL of the drain")
    told = [str(refused[0])] + [f"{state} {text}" for state, text in notices]
    assert any("terminating connection due to administrator command" in t for t in told), told
    assert all(state == "57P01" for state, _ in notices), told
    conn.close()
    wait_until(lambda: not proxy.process.running, 20, "dbproxy to exit after SIGTERM")
    assert proxy.process.returncode == 0, proxy.process.log_tail()


def test_query_timeout_cancels_the_statement(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra="[timeouts]\nquery = 0.5\n")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert conn.execute("SELECT 'next'").fetchone() == ("next",)


def test_a_full_server_pool_answers_53300_after_the_wait_and_reads_still_work(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra="[pool]\nmax_server_connections_per_backend = 1\nwait_timeout = 0.5\n")
    with psycopg.connect(proxy.dsn(), autocommit=True) as first:
        first.execute("CREATE TABLE IF NOT EXISTS pool_full (a int)")  # holds the only primary connection
        with psycopg.connect(proxy.dsn(), autocommit=True) as second:  # logs in through a replica
            assert second.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            with pytest.raises(psycopg.errors.TooManyConnections):
                second.execute("INSERT INTO pool_full VALUES (1)")
            assert second.execute("SELECT 1").fetchone() == (1,)


async def test_workers_share_the_port_forward_cancels_and_sum_their_metrics(pg_cluster, dbproxy_factory):
    import asyncio

    import asyncpg

    proxy = dbproxy_factory(pg_cluster, workers=2)
    assert proxy.status()["workers"] == 2
    conns = [await asyncpg.connect(proxy.dsn()) for _ in range(8)]
    try:
        # Each cancel arrives at whichever worker the kernel picks; the one that issued the key
        # gets it through the supervisor. Eight sessions make both cases all but certain.
        for conn in conns:
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT pg_sleep(60)", timeout=0.3)
            assert await conn.fetchval("SELECT 1") == 1
        text = _metrics(proxy)
        assert "tierproxy_dbproxy_clients_accepted_total 8.0" in text
        assert "tierproxy_dbproxy_cancels_total 8.0" in text
        assert proxy.status()["clients"] == 8
        # The admin console lands on one worker but shows them all: the supervisor gathers the
        # workers' state. Several tries, so that both workers answer one of them.
        for _ in range(4):
            r = _psql(proxy, "-F", "|", "-c", "SHOW CLIENTS", database="tierproxy")
            assert r.returncode == 0, r.stderr
            app_clients = [line for line in r.stdout.splitlines() if line.split("|")[1] == "postgres"]
            assert len(app_clients) == 8, r.stdout
            r = _psql(proxy, "-F", "|", "-c", "SHOW STATS", database="tierproxy")
            # 8 x (pg_sleep + SELECT 1) plus asyncpg's own introspection: at least 16 statements
            assert sum(int(line.split("|")[2]) for line in r.stdout.splitlines()) >= 16, r.stdout
    finally:
        for conn in conns:
            await conn.close()
    proxy.process.send_terminate()
    assert proxy.process.terminate(20) == 0
