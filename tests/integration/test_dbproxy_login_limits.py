"""Failed-login throttling of `tierproxy dbproxy` ([auth] failed_login_delay_ms and
max_failed_logins_per_minute), with asyncpg and raw sockets bound to other loopback addresses.

The delay is a lower bound on every wrong-password answer (that is the feature); a correct login
from another address during a burst is not held up by it; past the per-address limit the proxy
refuses at once (53300) without looking at the password. Every test has its own proxy: the
session-wide one must not have 127.0.0.1 throttled.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

import asyncpg
import pytest

from proxy.devstack.dbproxy import start_dbproxy
from proxy.pgwire import encode
from proxy.pgwire.auth import ScramClient
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import (
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    ErrorResponse,
    ReadyForQuery,
    decode_backend,
)

DELAY = 2.0
LIMIT = 5


@pytest.fixture
def proxy(pg_cluster, tmp_path):
    server = start_dbproxy(pg_cluster, log_dir=tmp_path, users={"app": "app-secret"},
                           auth_extra=f"failed_login_delay_ms = {int(DELAY * 1000)}\n"
                                      f"max_failed_logins_per_minute = {LIMIT}\n")  # fmt: skip
    try:
        yield server
    finally:
        server.close()


def _raw_login(port: int, source: str, password: str) -> tuple[str, float]:
    """Log in as app from `source` (a loopback address); ("ok" | the SQLSTATE, seconds taken)."""
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    framer = BackendFramer()
    scram = ScramClient("app", password)
    try:
        sock.sendall(encode.startup_message({"user": "app", "database": "postgres"}))
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return "closed", time.monotonic() - started
            for m in map(decode_backend, framer.feed(chunk)):
                if isinstance(m, ErrorResponse):
                    return m.sqlstate, time.monotonic() - started
                if isinstance(m, AuthenticationSASL):
                    sock.sendall(encode.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
                elif isinstance(m, AuthenticationSASLContinue):
                    sock.sendall(encode.sasl_response(scram.handle_server_first(m.data)))
                elif isinstance(m, AuthenticationSASLFinal):
                    scram.handle_server_final(m.data)
                elif isinstance(m, ReadyForQuery):
                    return "ok", time.monotonic() - started
    finally:
        sock.close()


async def _wrong(proxy) -> tuple[str, float]:
    started = time.monotonic()
    try:
        conn = await asyncpg.connect(proxy.dsn().replace("app-secret", "wrong"), timeout=30)
    except asyncpg.PostgresError as exc:
        return exc.sqlstate, time.monotonic() - started
    await conn.close()
    return "ok", time.monotonic() - started


def _metric(proxy, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_wrong_passwords_wait_the_delay_and_the_limit_refuses_at_once(proxy):
    # A burst of 3 * LIMIT wrong passwords at once from 127.0.0.1, and meanwhile a correct login
    # from 127.0.0.2: LIMIT of the burst are checked and answered 28P01 after the delay each, the
    # rest refused at once (53300) unchecked; the correct login does not wait for any of it.
    burst = asyncio.gather(*(_wrong(proxy) for _ in range(3 * LIMIT)))
    ok, ok_took = await asyncio.to_thread(_raw_login, proxy.port, "127.0.0.2", "app-secret")
    results = await burst
    assert ok == "ok"
    print(f"burst: {sorted((code, round(t, 3)) for code, t in results)}; correct login meanwhile: {ok_took:.3f} s")
    assert sorted(code for code, _ in results) == ["28P01"] * LIMIT + ["53300"] * (2 * LIMIT)
    assert all(took >= DELAY * 0.95 for code, took in results if code == "28P01"), results
    assert all(took < DELAY for code, took in results if code == "53300"), results
    assert ok_took < DELAY, f"a correct login from another address took {ok_took:.3f} s"
    # 127.0.0.1 has used up its failures: refused at once, even with the right password.
    code, took = await asyncio.to_thread(_raw_login, proxy.port, "127.0.0.1", "app-secret")
    assert code == "53300" and took < DELAY, (code, took)
    code, took = await _wrong(proxy)
    assert code == "53300" and took < DELAY, (code, took)
    # Other addresses are not affected.
    assert (await asyncio.to_thread(_raw_login, proxy.port, "127.0.0.3", "app-secret"))[0] == "ok"
    assert _metric(proxy, "tierproxy_dbproxy_login_failures_total") == LIMIT
    assert _metric(proxy, "tierproxy_dbproxy_logins_throttled_total") == 2 * LIMIT + 2
