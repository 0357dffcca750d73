"""`tierproxy shard` with `workers = 2` and with `[tls]`: two real PostgreSQL shards, real clients.

Workers: clients land on both worker processes (the kernel spreads connections over the
SO_REUSEPORT sockets), a cancel reaches the session whichever worker the CancelRequest lands on,
and /status, /metrics and the console (SHOW HOT KEYS, SHOW CLIENTS, SHOW SHARDS) count every
worker's clients and statements. TLS: psycopg and psql with sslmode=require and verify-full against
a test CA (the router's certificate is signed by it), mode "require" refusing clear text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.devstack.postgres import PgCluster, start_pg_cluster
from proxy.devstack.shard import ShardRouterServer, start_shard_router

SHARDS = ("s0", "s1")
GROUPS = """
[groups.users]
tables = ["users"]
key = "user_id"
map = "modulo"
"""
CELEBRITY = 7  # 7 % 2 == 1: s1
PSQL = shutil.which("psql")
OPENSSL = shutil.which("openssl")


def _openssl(*args: str) -> None:
    assert OPENSSL is not None, "openssl is needed (Debian package openssl)"
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A test certificate authority: its certificate and key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    return cert, key


def make_leaf(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by `ca`, and its key."""
    cert, key, csr = directory / "router.pem", directory / "router.key", directory / "router.csr"
    ext = directory / "router.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=tierproxy-shard-test")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PgCluster]]:
    out: list[PgCluster] = []
    try:
        for name in SHARDS:
            out.append(start_pg_cluster(0, log_dir=tmp_path_factory.mktemp(f"shard_{name}"), name=name))
        for c in out:
            c.primary.psql("create table users (user_id bigint primary key, name text)")
        yield out
    finally:
        for c in out:
            c.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    ca = make_ca(d, "tierproxy-test-ca")
    other = make_ca(d, "another-ca")
    cert, key = make_leaf(d, ca)
    return {"ca": ca[0], "other_ca": other[0], "cert": cert, "key": key}


def _tls(certs: dict[str, Path], mode: str) -> str:
    return f'[tls]\ncert_file = "{certs["cert"]}"\nkey_file = "{certs["key"]}"\nmode = "{mode}"\n'


def _start(clusters: list[PgCluster], log_dir: Path, name: str, head: str = "", extra: str = "") -> ShardRouterServer:
    c0 = clusters[0]
    return start_shard_router({n: c.primary for n, c in zip(SHARDS, clusters, strict=True)}, log_dir=log_dir,
                              backend_user=c0.user, backend_password=c0.password, groups=GROUPS,
                              head=head, extra=extra, name=name)  # fmt: skip


@pytest.fixture(scope="module")
def router(clusters: list[PgCluster], certs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardRouterServer]:  # fmt: skip
    server = _start(clusters, tmp_path_factory.mktemp("shard_workers"), "shard_workers", head="workers = 2",
                    extra=_tls(certs, "allow"))  # fmt: skip
    try:
        yield server
    finally:
        server.close()


def _psql(router: ShardRouterServer, sql: str, conninfo: str = "dbname=tierproxy sslmode=disable") -> str:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGCONNECT_TIMEOUT": "10"}
    r = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(router.port), "-U", "app", "-X", "-At", "-F", "|",
                        "-c", sql, conninfo], capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_clients_land_on_both_workers_and_the_figures_count_both(router: ShardRouterServer,
                                                                 clusters: list[PgCluster]) -> None:
    for c in clusters:
        c.primary.psql("truncate users")
    conns: list[psycopg.Connection] = []
    try:
        # New connections until both workers serve some (the kernel's choice, by address hash).
        while True:
            conns.append(psycopg.connect(router.dsn(), autocommit=True))
            workers = router.status()["workers"]
            assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2, workers
            if all(w["clients"] > 0 for w in workers) and len(conns) >= 4:
                break
            assert len(conns) < 64, f"64 connections and one worker has none: {workers}"
        conns[0].execute(f"INSERT INTO users (user_id, name) VALUES ({CELEBRITY}, 'celebrity')")
        hits = 1
        for i, conn in enumerate(conns):
            conn.execute(f"INSERT INTO users (user_id, name) VALUES ({1000 + i}, 'u{i}')")
            for _ in range(3):
                assert conn.execute(f"SELECT name FROM users WHERE user_id = {CELEBRITY}").fetchone() == ("celebrity",)
                hits += 1
        status = router.status()
        assert status["clients"] == len(conns)
        assert all(w["statements"] > 0 for w in status["workers"]), status["workers"]
        # SHOW HOT KEYS through the console counts the celebrity's statements on both workers:
        # each worker saw only part of them. Few keys: Space-Saving's counts are exact here.
        first = _psql(router, "SHOW HOT KEYS 1").split("|")
        assert first[:5] == ["users", str(CELEBRITY), "s1", str(hits), "0"], first
        clients = [line.split("|") for line in _psql(router, "SHOW CLIENTS").splitlines()]
        assert sum(1 for c in clients if c[1] == "postgres") == len(conns), clients
        shards = [line.split("|") for line in _psql(router, "SHOW SHARDS").splitlines()]
        assert [(s[0], s[2]) for s in shards] == [("s0", "connected"), ("s1", "connected")]
        per_shard = {s[0]: int(s[3]) for s in shards}
        assert per_shard["s1"] >= hits and per_shard["s0"] > 0
        metrics = router.admin_get("/metrics").decode()
        routed = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("tierproxy_shard_routed_statements_total{"))  # fmt: skip
        assert routed == sum(per_shard.values()) == sum(w["statements"] for w in router.status()["workers"])
    finally:
        for conn in conns:
            conn.close()


def _wait_running(cluster: PgCluster, marker: str) -> None:
    deadline = time.monotonic() + 30
    while cluster.primary.psql(f"select count(*) from pg_stat_activity where query like '%{marker}%' "
                               "and state = 'active' and pid <> pg_backend_pid()") != "1":  # fmt: skip
        assert time.monotonic() < deadline, "the statement did not start on the shard"
        time.sleep(0.05)  # polling the shard's own view, with a deadline


def test_a_cancel_reaches_the_session_whichever_worker_gets_it(router: ShardRouterServer,
                                                               clusters: list[PgCluster]) -> None:
    """Each CancelRequest is a new connection, which the kernel gives to either worker: repeat
    until one landed on the worker that does not hold the session (it passed it on, through the
    supervisor) and the statement was canceled all the same."""
    with psycopg.connect(router.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id, name) VALUES (1, 'one') ON CONFLICT (user_id) DO NOTHING")
    relayed_and_canceled = 0
    for attempt in range(40):
        marker = f"cancel_me_{attempt}"
        with psycopg.connect(router.dsn(), autocommit=True) as conn:
            errors: list[BaseException] = []

            def run(conn: psycopg.Connection = conn, marker: str = marker) -> None:
                try:
                    conn.execute(f"SELECT pg_sleep(60), '{marker}' FROM users WHERE user_id = 1")
                except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                    errors.append(exc)

            t = threading.Thread(target=run)
            t.start()
            _wait_running(clusters[1], marker)  # 1 % 2: s1
            before = router.status()["counters"]["cancels_relayed"]
            conn.cancel()
            t.join(30)
            assert not t.is_alive(), "the statement was not canceled"
            assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
            assert conn.execute("SELECT 1").fetchone() == (1,)
            if router.status()["counters"]["cancels_relayed"] > before:
                relayed_and_canceled += 1
                break
    assert relayed_and_canceled == 1, "no CancelRequest landed on the other worker in 40 tries"


def test_tls_with_psycopg_and_psql_verified_against_the_test_ca(router: ShardRouterServer,
                                                               certs: dict[str, Path]) -> None:
    with psycopg.connect(router.dsn() + "?sslmode=require", autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        conn.execute("INSERT INTO users (user_id, name) VALUES (5000, 'tls') ON CONFLICT (user_id) DO NOTHING")
        assert conn.execute("SELECT name FROM users WHERE user_id = 5000").fetchone() == ("tls",)
    with psycopg.connect(router.dsn() + f"?sslmode=verify-full&sslrootcert={certs['ca']}", autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1
    # verification is real: a certificate the client's CA did not sign is refused
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(router.dsn() + f"?sslmode=verify-full&sslrootcert={certs['other_ca']}")
    with psycopg.connect(router.dsn() + "?sslmode=disable") as conn:  # mode "allow": clear text too
        assert not conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    out = _psql(router, "SELECT name FROM users WHERE user_id = 5000",
                conninfo=f"dbname=postgres sslmode=verify-full sslrootcert={certs['ca']}")
    assert out.strip() == "tls"
    assert "SSL connection" in _psql(router, "\\conninfo", conninfo="dbname=postgres sslmode=require")
    assert router.status()["tls"] is True


def test_tls_mode_require_refuses_clear_text(clusters: list[PgCluster], certs: dict[str, Path],
                                             tmp_path: Path) -> None:
    server = _start(clusters, tmp_path, "shard_tls_require", extra=_tls(certs, "require"))
    try:
        with pytest.raises(psycopg.OperationalError, match="requires TLS"):
            psycopg.connect(server.dsn() + "?sslmode=disable")
        with psycopg.connect(server.dsn() + f"?sslmode=verify-full&sslrootcert={certs['ca']}") as conn:
            assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.close()


def test_sighup_reaches_every_worker_and_sigterm_stops_them(clusters: list[PgCluster], tmp_path: Path) -> None:
    import signal

    server = _start(clusters, tmp_path, "shard_workers_reload", head="workers = 2")
    conns: list[psycopg.Connection] = []
    try:
        pids = {w["pid"] for w in server.status()["workers"]}
        assert len(pids) == 2 and server.process.pid not in pids
        for c in clusters:
            c.primary.psql("delete from users where user_id = 4")
        clusters[1].primary.psql("insert into users values (4, 'on s1')")  # 4 % 2 == 0: s0 by the map
        original = server.config_path.read_text()
        server.config_path.write_text(original.replace('map = "modulo"', 'map = "modulo"\ndedicated = { "4" = "s1" }'))
        os.kill(server.process.pid, signal.SIGHUP)  # to the supervisor, which tells the workers
        while True:
            conns.append(psycopg.connect(server.dsn(), autocommit=True))
            if all(w["clients"] > 0 for w in server.status()["workers"]) and len(conns) >= 4:
                break
            assert len(conns) < 64, "64 connections and one worker has none"
        for conn in conns:  # whichever worker serves it, key 4 now goes to s1
            deadline = time.monotonic() + 20
            while conn.execute("SELECT name FROM users WHERE user_id = 4").fetchall() != [("on s1",)]:
                assert time.monotonic() < deadline, "a worker did not apply the reload"
                time.sleep(0.05)  # polling the router's own answer, with a deadline
        for conn in conns:
            conn.close()
        assert server.process.terminate(30.0) == 0
        for pid in pids:  # the workers are gone with their supervisor
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        for conn in conns:
            conn.close()
        server.close()
        for c in clusters:
            c.primary.psql("delete from users where user_id = 4")
