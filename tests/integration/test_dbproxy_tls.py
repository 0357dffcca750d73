"""TLS between clients and `tierproxy dbproxy` (`[tls]`): psql, psycopg and asyncpg over TLS,
certificate verification, mode "require", cancel in clear, and broken handshakes."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.integration.lbproc import REPO
from tests.integration.test_dbproxy_clients import _psql

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is needed (Debian package openssl)")

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 and its key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=tierproxy-test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _tls_toml(cert: Path, key: Path, mode: str) -> str:
    return f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nmode = "{mode}"\n'


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    return _cert(tmp_path, "server")


def test_clients_use_tls_when_they_ask_and_clear_text_still_works(pg_cluster, dbproxy_factory, certs):
    cert, key = certs
    proxy = dbproxy_factory(pg_cluster, extra=_tls_toml(cert, key, "allow"))
    with psycopg.connect(proxy.dsn() + "?sslmode=require", autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)  # routed to a replica
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
    # verify-full: the chain we configured is what the client gets, for the address it dialled
    with psycopg.connect(proxy.dsn() + f"?sslmode=verify-full&sslrootcert={cert}") as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(proxy.dsn() + "?sslmode=disable") as conn:
        assert not conn.pgconn.ssl_in_use and conn.execute("SELECT 2").fetchone() == (2,)
    r = _psql(proxy, "-c", "\\conninfo", "-c", "SELECT 3", database="dbname=postgres sslmode=require")
    assert r.returncode == 0 and "SSL connection" in r.stdout and r.stdout.strip().endswith("3"), r.stderr


async def test_asyncpg_over_tls_with_prepared_statements_and_show_clients(pg_cluster, dbproxy_factory, certs):
    cert, key = certs
    proxy = dbproxy_factory(pg_cluster, extra=_tls_toml(cert, key, "allow"))
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = await asyncpg.connect(proxy.dsn(), ssl=ctx)
    try:
        stmt = await conn.prepare("SELECT $1::int * 2")
        assert [await stmt.fetchval(i) for i in range(5)] == [0, 2, 4, 6, 8]
        rows = await conn.fetch("SELECT g FROM generate_series(1, 20000) g")  # many TLS records
        assert len(rows) == 20000 and rows[-1]["g"] == 20000
        r = _psql(proxy, "-F", "|", "-c", "SHOW CLIENTS", database="dbname=tierproxy sslmode=disable")
        flags = {line.split("|")[1]: line.split("|")[-1] for line in r.stdout.splitlines()}
        assert flags == {"postgres": "t", "tierproxy": "f"}, r.stdout
    finally:
        await conn.close()


def test_require_mode_refuses_clear_text_but_takes_a_clear_text_cancel(pg_cluster, dbproxy_factory, certs):
    cert, key = certs
    proxy = dbproxy_factory(pg_cluster, extra=_tls_toml(cert, key, "require"))
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(proxy.dsn() + "?sslmode=disable")
    with psycopg.connect(proxy.dsn() + "?sslmode=prefer") as conn:
        assert conn.pgconn.ssl_in_use
        # libpq 15 sends the CancelRequest on a new connection without TLS: still honoured
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
        timer.join()
        conn.rollback()
        assert conn.execute("SELECT 4").fetchone() == (4,)


def _raw(port: int, payload: bytes, *, wait_for_answer: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(SSL_REQUEST)
        answer = s.recv(1) if wait_for_answer else b""
        s.sendall(payload)
        chunks = [answer]
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def test_broken_handshakes_are_closed_and_the_proxy_keeps_serving(pg_cluster, dbproxy_factory, certs):
    cert, key = certs
    proxy = dbproxy_factory(pg_cluster, extra=_tls_toml(cert, key, "allow"))
    # 'S', then garbage instead of a ClientHello: the handshake fails and the connection closes
    assert _raw(proxy.port, b"GET / HTTP/1.1\r\n\r\n" * 10).startswith(b"S")
    # a startup packet in clear where the ClientHello should be: same
    startup = b"\x00\x03\x00\x00user\x00app\x00\x00"
    assert _raw(proxy.port, struct.pack("!i", len(startup) + 4) + startup).startswith(b"S")
    # bytes sent together with the SSLRequest (CVE-2021-23214): 08P01 before any 'S'
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(SSL_REQUEST + b"\x16\x03\x01\x00\x05hello")
        data = s.recv(65536)
        assert data[:1] == b"E" and b"08P01" in data
    with psycopg.connect(proxy.dsn() + "?sslmode=require") as conn:
        assert conn.execute("SELECT 5").fetchone() == (5,)
    assert proxy.process.running


def test_a_key_that_does_not_match_the_certificate_is_a_located_config_error(tmp_path, certs):
    cert, _key = certs
    _other_cert, other_key = _cert(tmp_path, "other")
    config = tmp_path / "dbproxy.toml"
    config.write_text(
        '[primary]\naddress = "127.0.0.1:5432"\n[backend_auth]\nuser = "u"\n[auth.users.app]\npassword = "p"\n'
        + _tls_toml(cert, other_key, "allow")
    )
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(config)], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and "tls" in r.stderr and "cannot use cert_file" in r.stderr, r.stderr
    config.write_text(config.read_text().replace(str(other_key), str(tmp_path / "missing.key")))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(config)], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and "tls.key_file" in r.stderr, r.stderr


def test_without_a_tls_table_sslrequest_gets_n(pg_cluster, dbproxy_factory):
    # Without [tls] the answer to SSLRequest stays 'N' and libpq's sslmode=require fails cleanly.
    proxy = dbproxy_factory(pg_cluster)
    with pytest.raises(psycopg.OperationalError, match="does not support SSL|SSL"):
        psycopg.connect(proxy.dsn() + "?sslmode=require")
    with psycopg.connect(proxy.dsn() + "?sslmode=prefer") as conn:
        assert not conn.pgconn.ssl_in_use
