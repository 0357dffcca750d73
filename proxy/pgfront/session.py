"""A client connection to a PostgreSQL proxy, up to what the proxy decides: the shared session base.

`FrontendSession` is an asyncio Protocol holding what every PostgreSQL front end does for one
client, whatever it routes: the startup packet (SSLRequest answered 'S' and the TLS handshake
when the owner has a TLS context, else 'N'; GSSENCRequest 'N'; CancelRequest to the owner),
startup parameters (replication refused, NegotiateProtocolVersion for 3.x > 0), the proxy's own
authentication (clientauth.py) with failed-login throttling (login_limits.py), the first server
connection whose ParameterStatus and BackendKeyData (its real pid and secret) the client gets,
the admin console on the virtual database `tierproxy` (console.py), output, FATAL and the
lingering close, attaching pooled server connections, and relaying what servers send
(`relay_from_server`).

A daemon subclasses it with its decisions: `data_received` and `_pump` (the client's messages
once logged in), `on_server_lost`, and sets `router` (anything with `on_ready_for_query` and
`in_transaction`, see `TransactionState`). What the session needs of its daemon is
`FrontendServices`. This module imports no daemon.

`relay_from_server` is the proxy's hottest loop: it scans message headers in place and forwards
whole chunks, acting only on the few message types that matter. It lives in relay.py with the
fields it keeps (`RelaySession`, this class's base): compiled, that is an extension type.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from typing import Any, Protocol

from proxy.core.sendnow import DirectSend, direct_send
from proxy.pgwire import encode
from proxy.pgwire.errors import (
    CONNECTION_FAILURE,
    FEATURE_NOT_SUPPORTED,
    INTERNAL_ERROR,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgProtocolError,
)
from proxy.pgwire.framing import FrontendFramer, Message
from proxy.pgwire.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    decode_startup,
)

from .clientauth import ClientAuth, Credentials
from .console import ADMIN_DATABASE
from .login_limits import LoginLimiter
from .pool import ServerPools
from .relay import RelaySession
from .server import ServerConn, ServerError, error_fields

__all__ = ["ADMIN_DATABASE", "FrontendServices", "FrontendSession", "TransactionState", "cstrings"]

log = logging.getLogger("tierproxy.pgfront")

LINGER_SECONDS = 5.0  # a client that does not close after our FATAL is cut off after this
ENDING_SECONDS = 3.0  # a half-forwarded message that does not end by then: close without our FATAL
# Startup parameters a proxy cannot honour: physical/logical replication streams.
_REFUSED_PARAMS = ("replication",)
class LoginCounters(Protocol):
    auth_failures: int
    login_failures: int  # wrong passwords (28P01)
    logins_throttled: int  # refused at once: their address failed too often


class TransactionState(Protocol):
    """What the relay tells about each ReadyForQuery (the dbproxy: its SessionRouter)."""

    in_transaction: bool

    def on_ready_for_query(self, status: bytes, *, failed: bool = False) -> Any: ...


class FrontendServices(Protocol):
    """What a session needs of its daemon."""

    max_message_length: int
    sessions: set[Any]
    closing: set[Any]  # sessions whose FATAL is still being delivered (the drain waits for them)
    tasks: set[asyncio.Task[Any]]
    tls_context: ssl.SSLContext | None
    creds: Credentials
    login_limiter: LoginLimiter
    metrics: LoginCounters
    pools: ServerPools

    @property
    def client_login_timeout(self) -> float: ...  # seconds: startup + authentication
    @property
    def tls_required(self) -> bool: ...  # a client without TLS is refused (28000)
    @property
    def failed_login_delay(self) -> float: ...  # seconds before a 28P01
    @property
    def console_is_local(self) -> bool: ...
    def cancel(self, pid: int, secret: int) -> None: ...
    def console_params(self, user: str) -> dict[str, str]: ...
    def login_candidates(self) -> list[str]: ...  # backends to log in through, in order
    def register_cancel_key(self, session: Any, key: tuple[int, int] | None = None) -> tuple[int, int]: ...
    def console(self, sql: str) -> bytes: ...
    async def console_async(self, sql: str) -> bytes: ...
    def finished(self, conn: ServerConn) -> None: ...  # a server went idle (ReadyForQuery)
    def restart_query_timer(self, conn: ServerConn) -> None: ...  # a statement ended, more in flight
    def session_ended(self, session: Any) -> None: ...
    def release_server(self, conn: ServerConn) -> None: ...


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


class FrontendSession(RelaySession, asyncio.Protocol):
    """See the module docstring. `relay_from_server` and the fields it keeps per session
    (`ending`, `terminating`, `_multi`) are `RelaySession`'s (relay.py: compiled, an extension type)."""

    product = "tierproxy"  # how errors name the proxy ("tierproxy dbproxy")

    def __init__(self, services: FrontendServices) -> None:
        self.d = services
        self.transport: asyncio.Transport | None = None
        self.direct: DirectSend | None = None  # send(2) straight to its socket (proxy/core/sendnow.py)
        self.peer: str | None = None
        self.phase = "startup"  # startup -> auth -> login -> ready -> closed
        self.framer = FrontendFramer(max_message_length=services.max_message_length)
        self.user = ""
        self.database = ""
        self.options: tuple[tuple[str, str], ...] = ()
        self.admin = False
        self.tls = False  # the client completed a TLS handshake (config [tls])
        self.auth: ClientAuth | None = None
        self.key = (0, 0)
        self.router: TransactionState  # set by the subclass
        self.servers: dict[str, ServerConn] = {}
        # Named statements the client has: name -> (its Parse message, what the owner made of it).
        self.statements: dict[str, tuple[bytes, Any]] = {}
        self.inbox: deque[Message] = deque()
        self.current: ServerConn | None = None
        self.waiting = False
        self.skip_until_sync = False
        self.terminating = False  # Terminate received while answers were still due
        self.ending: tuple[str, str] | None = None  # a FATAL waiting for a server message's end
        self.server_paused = False  # a server's socket buffer is full (COPY FROM from a fast client)
        self.writing_paused = False
        self.connected_at = time.time()
        self.statements_run = 0
        self._multi = False  # the last statement was a multi-statement string (its errors: not failed)
        self._login_timer: asyncio.TimerHandle | None = None

    def _feed(self, data: bytes) -> None:
        """Frame the client's bytes and run the messages they complete. On a framing error what
        came before the bad message runs first, as on a server (not in startup: an SSLRequest
        followed by bad bytes must not be answered, CVE-2021-23214), then FATAL and close."""
        if self.waiting and self.transport is not None:
            # More from the client while its messages wait (`_start_async`): these bytes are
            # queued, nothing more is read until the wait ends, so a pipelining client cannot
            # make the session buffer without bound.
            self.transport.pause_reading()
        try:
            msgs = self.framer.feed(data)
        except PgProtocolError as exc:
            if self._refuse_message(exc):
                return
            if self.phase != "startup":
                self.inbox.extend(exc.messages)  # type: ignore[arg-type]
                self._pump()
            self.fatal(exc.sqlstate, exc.message)
            return
        self.inbox.extend(msgs)
        self._pump()

    def _refuse_message(self, exc: PgProtocolError) -> bool:
        """A framing error the subclass answers itself (True), e.g. a message over its size limit."""
        return False

    def _pump(self) -> None:
        """Run the client's queued messages by phase; `_ready_message` is the subclass's."""
        try:
            while self.inbox and not self.waiting and self.phase != "closed":
                msg = self.inbox.popleft()
                if self.phase == "ready":
                    self._ready_message(msg)
                elif self.phase == "startup":
                    self._startup_message(msg)
                elif self.phase == "auth":
                    self._auth_message(msg)
                else:
                    # Login waits for a server; messages before ReadyForQuery are a client bug.
                    raise PgProtocolError("message before the login finished", PROTOCOL_VIOLATION)
            self._inbox_drained()
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
        except Exception:
            self._internal_error()

    def _ready_message(self, msg: Message) -> None:
        raise NotImplementedError

    def _inbox_drained(self) -> None:
        """Called when `_pump` has run what it could (the subclass may send a partial batch)."""

    def on_server_lost(self, conn: ServerConn) -> None:
        raise NotImplementedError

    # -- asyncio.Protocol (client side) ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.direct = direct_send(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        self.d.sessions.add(self)
        loop = asyncio.get_running_loop()
        self._login_timer = loop.call_later(self.d.client_login_timeout, self._login_timeout)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.d.closing.discard(self)
        self._end()

    def pause_writing(self) -> None:
        self.writing_paused = True
        for conn in self.servers.values():
            if conn.transport is not None and not conn.closed:
                conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for conn in self.servers.values():
            if conn.transport is not None and not conn.closed:
                conn.transport.resume_reading()

    def pause_client(self) -> None:
        self.server_paused = True
        if self.transport is not None and self.phase != "closed":
            self.transport.pause_reading()

    def resume_client(self) -> None:
        self.server_paused = False
        if self.transport is not None and self.phase != "closed" and not self.waiting:
            self.transport.resume_reading()

    # -- output ---------------------------------------------------------------------------------

    def forward_raw(self, data: bytes) -> None:
        if self.transport is not None and self.phase != "closed":
            self.transport.write(data)

    def send_error(self, fields: dict[str, str]) -> None:
        """An ErrorResponse from a field dict (a server's own, or `error_fields`)."""
        severity = fields.get("V") or fields.get("S", "ERROR")
        extra = {k: v for k, v in fields.items() if k not in ("S", "V", "C", "M")}
        self.forward_raw(encode.error_response(severity, fields.get("C", INTERNAL_ERROR), fields.get("M", ""),
                                               fields=extra))  # fmt: skip

    def fatal(self, sqlstate: str, message: str) -> None:
        """FATAL error to the client and close (what PostgreSQL does on protocol errors). If part
        of a server's message has been forwarded, the FATAL waits for its end (`end_after_message`)."""
        if self.phase == "closed" or self.ending is not None:
            return
        for conn in self.servers.values():
            if conn._skip and not conn.closed:
                self.end_after_message(sqlstate, message)
                return
        self.send_error(error_fields("FATAL", sqlstate, message))
        # Not before the login: an unauthenticated peer gets no lingering socket of ours.
        self.close(linger=self.phase == "ready")

    def close(self, *, linger: bool = False) -> None:
        """End the session. `linger` (after a FATAL of ours): make sure the client gets it. The
        write side is shut after what is buffered (FIN), and input is read and dropped until the
        client closes: closing with unread input would send a RST, and a client still sending
        could lose the FATAL with it. The daemon's drain waits for these closes to finish, so
        the buffered answer and FATAL are not dropped with the process (`FrontendServices.closing`)."""
        t = self.transport
        if t is not None and not t.is_closing():
            if linger and t.can_write_eof():
                t.write_eof()
                t.resume_reading()
                self.d.closing.add(self)
                asyncio.get_running_loop().call_later(LINGER_SECONDS, t.abort)
            else:
                t.close()
        self._end()

    def _login_timeout(self) -> None:
        if self.phase not in ("ready", "closed"):
            self.fatal("08006", "timeout while waiting for the client to log in")

    def _internal_error(self) -> None:
        """A bug of ours while handling this client (called from an except block): log it with
        the traceback, tell the client, close; the daemon and other sessions go on."""
        log.exception("session failed", extra={"user": self.user, "peer": self.peer})
        self.fatal(INTERNAL_ERROR, f"internal error in {self.product}")

    def answers_due(self) -> bool:
        """A server still owes answers the client asked for (a Sync or Query sent, no
        ReadyForQuery yet), outside COPY: what a Terminate waits for."""
        return any(c.groups and not c.copy and not c.closed for c in self.servers.values())

    def _start_async(self, coro: Any) -> None:
        # Later messages wait (`waiting`); the client's reading is paused only if it sends more
        # meanwhile (`_feed`): pausing and resuming cost a system call each (epoll_ctl; under
        # uvloop's libuv an io_uring_enter) at every wait (a login's server, a commit LSN, a new
        # backend), for clients that mostly send nothing until answered. (Resuming a transport
        # that is reading is a no-op without a system call, in asyncio and uvloop.)
        self.waiting = True
        task = asyncio.get_running_loop().create_task(coro)
        self.d.tasks.add(task)
        task.add_done_callback(self._async_done)

    def _async_done(self, task: asyncio.Task[None]) -> None:
        self.d.tasks.discard(task)
        self.waiting = False
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("session task failed", exc_info=exc, extra={"user": self.user})
            self.fatal(INTERNAL_ERROR, f"internal error in {self.product}")
            return
        if self.phase == "closed":
            return
        if self.transport is not None and not self.server_paused:
            self.transport.resume_reading()
        self._pump()

    async def _attach(self, backend: str) -> ServerConn:
        conn = self.servers.get(backend)
        if conn is not None and not conn.closed:
            return conn
        conn = await self.d.pools.acquire((backend, self.user, self.database, self.options))
        if self.phase == "closed":
            await self.d.pools.release(conn)
            raise ServerError("client went away")
        if conn.closed:
            # Lost after its login but before this task's turn (a server killed while clients
            # connect): no session was attached to hear it, so a statement written to it would
            # never be answered. The caller's ServerError path decides again or fails the batch.
            await self.d.pools.release(conn)
            raise conn._lost_exc or ServerError(f"server {backend} closed the connection")
        conn.set_attached(self)
        self.servers[backend] = conn
        if self.writing_paused and conn.transport is not None:
            conn.transport.pause_reading()
        return conn

    def _end(self) -> None:
        if self.phase == "closed":
            return
        self.phase = "closed"
        if self._login_timer is not None:
            self._login_timer.cancel()
        self.d.session_ended(self)
        servers, self.servers = list(self.servers.values()), {}
        for conn in servers:
            self.d.release_server(conn)

    # -- answering what will not be run --------------------------------------------------------

    def _status(self) -> bytes:
        """The ReadyForQuery status the proxy answers with itself."""
        r = self.router
        if r.in_transaction:
            return b"T"
        return b"I"

    def _fail_batch(self, batch: list[tuple[Message, Any]], exc: ServerError) -> None:
        """`batch` (the client's messages, each with what the subclass noted about it) could not
        be sent: the error, then what the client waits for."""
        fields = dict(exc.fields)
        fields["S"] = fields["V"] = "ERROR"
        self.send_error(fields)
        self._answer_lost(batch)

    def _answer_lost(self, batch: list[tuple[Message, Any]]) -> None:
        """ReadyForQuery for every Sync/Query the client sent that will never be answered."""
        syncs = sum(1 for m, _ in batch if m.type in (b"S", b"Q", b"F"))
        if any(m.type not in (b"S", b"Q", b"F") for m, _ in batch[-1:]):
            self.skip_until_sync = True
        self.router.on_ready_for_query(b"I", failed=True)  # never sent: nothing committed
        self.forward_raw(encode.ready_for_query(b"I") * syncs)

    # -- login ----------------------------------------------------------------------------------

    def _startup_message(self, msg: Message) -> None:
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
                if self.transport is not None:
                    self.transport.pause_reading()  # the handshake's bytes are not for the framer
                self._start_async(self._start_tls(self.d.tls_context))
                return
            self.forward_raw(b"N")
            return
        if isinstance(m, CancelRequest):
            self.d.cancel(m.pid, m.secret)
            self.close()
            return
        assert isinstance(m, StartupMessage)
        if self.d.tls_required and not self.tls:
            raise PgProtocolError(f"{self.product} requires TLS (connect with sslmode=require)", "28000")
        params = dict(m.params)
        user = params.pop("user", "")
        if not user:
            raise PgProtocolError("no PostgreSQL user name specified in startup packet", "28000")
        for name in _REFUSED_PARAMS:
            if params.get(name, "false").lower() not in ("false", "off", "0", "no"):
                raise PgProtocolError(f"{self.product} does not proxy replication connections",
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

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """The handshake after our 'S'; then the client's startup packet, encrypted."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, context, server_side=True,
                                             ssl_handshake_timeout=self.d.client_login_timeout)  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake failed", extra={"peer": self.peer, "error": str(exc)})
            self.close()
            return
        if transport is None:  # the connection went away during the handshake
            self.close()
            return
        self.transport = transport  # type: ignore[assignment]
        self.direct = None  # TLS: every write through the TLS transport (sendnow.send checks it too)
        self.tls = True

    def _auth_message(self, msg: Message) -> None:
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

    def _refuse_if_throttled(self) -> None:
        """This address failed too often lately (login_limits.py): refuse now, unchecked."""
        if self.d.login_limiter.blocked(self.peer or "", time.monotonic()):
            self.d.metrics.logins_throttled += 1
            raise PgProtocolError(f"too many failed login attempts from {self.peer}; try again later",
                                  TOO_MANY_CONNECTIONS)  # fmt: skip

    def _failed_login(self, exc: PgProtocolError) -> None:
        """A wrong password: count it for the address, answer 28P01 after the delay (a timer:
        the event loop and other clients go on), reading nothing more from this client."""
        d = self.d
        d.metrics.login_failures += 1
        d.login_limiter.failed(self.peer or "", time.monotonic())
        delay = d.failed_login_delay
        if delay <= 0:
            self.fatal(exc.sqlstate, exc.message)
            return
        self.waiting = True  # _pump takes nothing more from this client
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().call_later(delay, self.fatal, exc.sqlstate, exc.message)

    def _logged_in(self) -> None:
        self.phase = "login"
        if self.admin:
            self._finish_login(self.d.console_params(self.user))
            return
        self._start_async(self._login_server())

    async def _login_server(self) -> None:
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

    def _finish_login(self, params: dict[str, str], key: tuple[int, int] | None = None) -> None:
        """ReadyForQuery after the login. `key`: the BackendKeyData of the server the client
        logged in through (its own first server connection, held for the whole session): the client
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

    async def _console_async(self, sql: str) -> None:
        answer = await self.d.console_async(sql)
        self.forward_raw(answer + encode.ready_for_query(b"I"))

    def _admin_message(self, msg: Message) -> None:
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

    # -- from a server --------------------------------------------------------------------------

    def end_after_message(self, sqlstate: str, message: str) -> None:
        """A FATAL of ours (drain deadline, bad client input) while a server's message is half
        forwarded (`ServerConn._skip`: relayed as it arrives): written now it would land inside
        that message and the client would read it as the message's bytes, then see a bare close.
        Run nothing more from the client, let the message end (relay_from_server sends the
        FATAL at the next message boundary), or close without it after ENDING_SECONDS."""
        self.ending = (sqlstate, message)
        self.waiting = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.d.closing.add(self)  # the drain waits for it
        asyncio.get_running_loop().call_later(ENDING_SECONDS, self._ending_timeout)

    def _ending_timeout(self) -> None:
        if self.ending is not None and self.phase != "closed":
            self.ending = None
            self.d.closing.discard(self)
            self.close()

    def end_with_server_error(self, conn: ServerConn) -> None:
        """Forward the FATAL `conn` sent before closing (all its fields) or 08006, and close."""
        fields = conn.fatal
        if fields is None:
            fields = error_fields("FATAL", CONNECTION_FAILURE, f"server connection to {conn.backend} was lost")
        self.send_error(fields)
        self.close(linger=True)

    # -- cancel ---------------------------------------------------------------------------------

    def cancel_targets(self) -> list[ServerConn]:
        return [c for c in self.servers.values() if c.busy and not c.closed]
