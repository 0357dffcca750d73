"""The dbproxy reads a client while the client's messages wait for something (a server from a
full pool here) and pauses only once more arrives: no pause and resume of the client's socket at
every wait (two system calls each), and still no buffering without bound.

A dbproxy with one server connection per backend: client A holds the primary's, so client B's
login waits for it (`_start_async`). What B sends meanwhile is read once (the kernel's receive
queue of the proxy's socket drains, /proc/net/tcp) and the rest stays in the kernel; when A
leaves, B logs in and every statement is answered in order.
"""

from __future__ import annotations

from typing import Any

from proxy.devstack.poll import wait_until
from proxy.pgwire import encode
from proxy.pgwire.auth import ScramClient
from proxy.pgwire.messages import (
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    ReadyForQuery,
)

from .pgraw import RawPg, shape
from .sockq import rx_queue


class AuthOnly(RawPg):
    """Logs in up to the proxy's own authentication (SCRAM-SHA-256, the dev stack's), not
    waiting for the ReadyForQuery that comes once the proxy has a server for the session."""

    def _login(self, user: str, password: str, database: str) -> None:
        self.send(encode.startup_message({"user": user, "database": database}))
        m = self.recv()
        assert isinstance(m, AuthenticationSASL), m
        scram = ScramClient(user, password)
        self.send(encode.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
        m = self.recv()
        assert isinstance(m, AuthenticationSASLContinue), m
        self.send(encode.sasl_response(scram.handle_server_first(m.data)))
        m = self.recv()
        assert isinstance(m, AuthenticationSASLFinal), m
        scram.handle_server_final(m.data)


def test_a_waiting_session_reads_the_client_once_then_leaves_the_rest_in_the_kernel(
        pg_cluster: Any, dbproxy_factory: Any) -> None:  # fmt: skip
    proxy = dbproxy_factory(pg_cluster, extra="[pool]\nmax_server_connections_per_backend = 1\nwait_timeout = 60\n")
    a = RawPg("127.0.0.1", proxy.port, "app", "app-secret")  # holds the primary's one connection
    b = AuthOnly("127.0.0.1", proxy.port, "app", "app-secret")
    try:
        wait_until(lambda: any(p["backend"] == "primary" and p["waiting"] >= 1 for p in proxy.status()["pools"]),
                   10.0, "b's login waits for the primary's connection")  # fmt: skip
        port = b.sock.getsockname()[1]
        first = encode.query("SELECT 'one'")
        b.send(first)
        wait_until(lambda: rx_queue(proxy.port, port) == 0, 10.0, "the proxy reads the first statement while b waits")
        second = encode.query("SELECT 'two'") * 64
        b.send(second)
        wait_until(lambda: rx_queue(proxy.port, port) > 0, 10.0, "the second write reaches the proxy's socket")
        proxy.status()  # its loop has run since: had it been reading, it would have read them
        assert rx_queue(proxy.port, port) == len(second)  # paused: they wait in the kernel
        a.close()
        login = b.until(ReadyForQuery)
        assert any(isinstance(m, BackendKeyData) for m in login)
        assert ("DataRow", b"one") in shape(b.until(ReadyForQuery))
        for _ in range(64):
            assert ("DataRow", b"two") in shape(b.until(ReadyForQuery))
        assert rx_queue(proxy.port, port) == 0
    finally:
        a.close()
        b.close()
