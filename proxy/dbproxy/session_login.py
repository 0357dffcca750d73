"""Login of a client session (startup packet, authentication, first server) and its admin console.

A mixin of `ClientSession` (session.py), split out to keep each file readable: the methods here
run before the session reaches the "ready" phase, or for sessions on the virtual database
`tierproxy`, and use the session's attributes documented there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING

from proxy.pgfront.clientauth import ClientAuth
from proxy.pgfront.console import ADMIN_DATABASE
from proxy.pgfront.server import ServerConn, ServerError, error_fields
from proxy.pgwire import encode
from proxy.pgwire.errors import (
    CONNECTION_FAILURE,
    FEATURE_NOT_SUPPORTED,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgProtocolError,
)
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    decode_startup,
)

if TYPE_CHECKING:
    from .session import ClientSession

__all__ = ["ADMIN_DATABASE", "LoginMixin", "cstrings"]

log = logging.getLogger("tierproxy.dbproxy")

# Startup parameters a proxy cannot honour: physical/logical replication streams.
_REFUSED_PARAMS = ("replication",)


def cstrings(raw: bytes, start: int, n: int) -> tuple[list[bytes], int]:
    """`n` NUL-terminated strings from `start`; 08P01 if the message ends first."""
    out = []
    pos = start
    for _ in range(n):
        end = raw.find(b"\0", pos)
        if end < 0:
            raise PgProtocolError("invalid message format: unterminated string", PROTOCOL_VIOLATION)
        out.append(raw[pos:end])
        pos = end + 1
    return out, pos


class LoginMixin:
    def _startup_message(self: ClientSession, msg: Message) -> None:
        if msg.type:
            raise PgProtocolError("expected a startup packet", PROTOCOL_VIOLATION)
        m = decode_startup(msg.body)
        if isinstance(m, SSLRequest | GSSENCRequest):
            if self.framer.buffered or self.inbox:
                # CVE-2021-23214: nothing may follow the request before the answer.
                raise PgProtocolError("unexpected data after encryption request", PROTOCOL_VIOLATION)
            if self.tls:
                raise PgProtocolError("encryption request after the TLS handshake", PROTOCOL_VIOLATION)
            if isinstance(m, SSLRequest) and self.d.tls_context is not None:
                self.forward_raw(b"S")
                self._start_async(self._start_tls(self.d.tls_context))
                return
            self.forward_raw(b"N")
            return
        if isinstance(m, CancelRequest):
            self.d.cancel(m.pid, m.secret)
            self.close()
            return
        assert isinstance(m, StartupMessage)
        tls = self.d.cfg.tls
        if tls is not None and tls.mode == "require" and not self.tls:
            raise PgProtocolError("tierproxy dbproxy requires TLS (connect with sslmode=require)", "28000")
        params = dict(m.params)
        user = params.pop("user", "")
        if not user:
            raise PgProtocolError("no PostgreSQL user name specified in startup packet", "28000")
        for name in _REFUSED_PARAMS:
            if params.get(name, "false").lower() not in ("false", "off", "0", "no"):
                raise PgProtocolError("tierproxy dbproxy does not proxy replication connections",
                                      FEATURE_NOT_SUPPORTED)
        params.pop("replication", None)
        self.user = user
        self.database = params.pop("database", "") or user
        self.options = tuple(sorted(params.items()))
        self.admin = self.database == ADMIN_DATABASE
        if m.protocol & 0xFFFF:
            # 3.x with x > 0: we speak 3.0 (protocol-flow.html, NegotiateProtocolVersion).
            unknown = [k for k, _ in self.options if k.startswith("_pq_.")]
            self.forward_raw(encode.negotiate_protocol_version(0, unknown))
        self._refuse_if_throttled()
        self.auth = ClientAuth(self.d.creds, user, self.peer)
        self.phase = "auth"
        self.forward_raw(self.auth.start())
        if self.auth.done:
            self._logged_in()

    async def _start_tls(self: ClientSession, context: ssl.SSLContext) -> None:
        """The handshake after our 'S'; then the client's startup packet, encrypted."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, context, server_side=True,
                                             ssl_handshake_timeout=self.d.cfg.timeouts.client_login)  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake failed", extra={"peer": self.peer, "error": str(exc)})
            self.close()
            return
        if transport is None:  # the connection went away during the handshake
            self.close()
            return
        self.transport = transport  # type: ignore[assignment]
        self.tls = True

    def _auth_message(self: ClientSession, msg: Message) -> None:
        if msg.type != b"p" or self.auth is None:
            raise PgProtocolError("expected a password message", PROTOCOL_VIOLATION)
        self._refuse_if_throttled()
        try:
            reply = self.auth.handle(msg.body)
        except PgProtocolError as exc:
            self.d.metrics.auth_failures += 1
            log.info("authentication failed", extra={"user": self.user, "peer": self.peer})
            if exc.sqlstate == INVALID_PASSWORD:
                self._failed_login(exc)
                return
            raise
        self.forward_raw(reply)
        if self.auth.done:
            self._logged_in()

    def _refuse_if_throttled(self: ClientSession) -> None:
        """This address failed too often lately (login_limits.py): refuse now, unchecked."""
        if self.d.login_limiter.blocked(self.peer or "", time.monotonic()):
            self.d.metrics.logins_throttled += 1
            raise PgProtocolError(f"too many failed login attempts from {self.peer}; try again later",
                                  TOO_MANY_CONNECTIONS)  # fmt: skip

    def _failed_login(self: ClientSession, exc: PgProtocolError) -> None:
        """A wrong password: count it for the address, answer 28P01 after the delay (a timer:
        the event loop and other clients go on), reading nothing more from this client."""
        d = self.d
        d.metrics.login_failures += 1
        d.login_limiter.failed(self.peer or "", time.monotonic())
        delay = d.cfg.auth.failed_login_delay_ms / 1000.0
        if delay <= 0:
            self.fatal(exc.sqlstate, exc.message)
            return
        self.waiting = True  # _pump takes nothing more from this client
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().call_later(delay, self.fatal, exc.sqlstate, exc.message)

    def _logged_in(self: ClientSession) -> None:
        self.phase = "login"
        if self.admin:
            self._finish_login(self.d.console_params(self.user))
            return
        self._start_async(self._login_server())

    async def _login_server(self: ClientSession) -> None:
        conn: ServerConn | None = None
        errors: list[ServerError] = []
        for backend in self.d.login_candidates():
            try:
                conn = await self._attach(backend)
                break
            except ServerError as exc:
                errors.append(exc)
                if exc.sqlstate not in (CONNECTION_FAILURE, "53300"):
                    break  # the server refused (no such database, ...): same everywhere
        if conn is None:
            err = errors[0] if errors else ServerError("no server is available")
            fields = dict(err.fields)
            fields["S"] = fields["V"] = "FATAL"
            self.send_error(fields)
            self.close()
            return
        self._finish_login(conn.params, (conn.pid, conn.secret))

    def _finish_login(self: ClientSession, params: dict[str, str], key: tuple[int, int] | None = None) -> None:
        """ReadyForQuery after the login. `key`: the BackendKeyData of the server the client
        logged in through (its own primary connection, held for the whole session): the client
        gets that server's real pid and secret, so NOTIFY pids, pg_terminate_backend and
        pg_stat_activity agree with what it was told (the admin console gets a key of ours)."""
        if self.phase == "closed":
            return
        if self._login_timer is not None:
            self._login_timer.cancel()
        self.key = self.d.register_cancel_key(self, key)
        out = [encode.parameter_status(k, v) for k, v in params.items()]
        out.append(encode.backend_key_data(*self.key))
        out.append(encode.ready_for_query(b"I"))
        self.phase = "ready"
        self.forward_raw(b"".join(out))

    # -- admin console --------------------------------------------------------------------------

    async def _console_async(self: ClientSession, sql: str) -> None:
        answer = await self.d.console_async(sql)
        self.forward_raw(answer + encode.ready_for_query(b"I"))

    def _admin_message(self: ClientSession, msg: Message) -> None:
        t = msg.type
        if t == b"Q":
            raw = bytes(msg.raw)
            (sql,), _ = cstrings(raw, 5, 1)
            text = sql.decode("utf-8", "replace")
            if self.d.console_is_local:
                self.forward_raw(self.d.console(text) + encode.ready_for_query(b"I"))
            else:
                self._start_async(self._console_async(text))
        elif t == b"S":
            self.forward_raw(encode.ready_for_query(b"I"))
        elif t in (b"P", b"B", b"D", b"E", b"C", b"H"):
            self.send_error(error_fields("ERROR", FEATURE_NOT_SUPPORTED,
                                         "the tierproxy admin database takes simple queries only"))
            self.skip_until_sync = True
        else:
            raise PgProtocolError(f"unexpected message type {t!r}")

