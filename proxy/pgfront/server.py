"""One connection from the proxy to a PostgreSQL server.

Theory of operation
-------------------
A `ServerConn` is an asyncio Protocol with two modes:

* internal: `login()` (startup and authentication as a client: SCRAM-SHA-256, md5 or cleartext,
  as the server asks) and `simple_query()` (the proxy's own statements: DISCARD ALL on release,
  or whatever the owner needs, e.g. the dbproxy's pg_current_wal_insert_lsn()). Messages go to an
  inbox that those coroutines read.
* attached: bytes go straight to the owning client session (`session.relay_from_server`, see
  `ServerOwner`), which scans message headers in place and forwards whole chunks; no per-message
  objects, no awaits.

Part of the shared PostgreSQL front end (proxy/pgfront): it knows nothing of routing; its owner is
any object with the `ServerOwner` methods. It also holds the relay state the session needs about
this server: which prepared statements exist
here (`prepared`, name -> SQL text, or None when a failed batch left it unknown), and the sync
groups in flight (`groups`): one entry per Sync or Query sent and not yet answered by
ReadyForQuery, each a list of flags, one per Parse/Close sent in that group, True when the proxy
injected it (its ParseComplete/CloseComplete is then not forwarded to the client).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from proxy.core.sendnow import DirectSend, direct_send
from proxy.pgwire import encode
from proxy.pgwire.auth import ScramClient, md5_password
from proxy.pgwire.errors import CONNECTION_FAILURE, PgProtocolError
from proxy.pgwire.framing import DEFAULT_MAX_MESSAGE_LENGTH as MAX_MESSAGE_LENGTH
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    decode_backend,
)

from .relay import RelayServer, SyncGroup

__all__ = ["QueryResult", "ServerConn", "ServerError", "ServerOwner", "SyncGroup", "collect_answer", "collect_query", "end_open_group", "error_fields", "open_server", "send_cancel"]

log = logging.getLogger("tierproxy.pgfront")
_INT32 = struct.Struct("!i")
_BYTE1 = tuple(bytes((i,)) for i in range(256))


def error_fields(severity: str, sqlstate: str, message: str) -> dict[str, str]:
    return {"S": severity, "V": severity, "C": sqlstate, "M": message}


class ServerError(Exception):
    """A server refused us (its ErrorResponse fields) or could not be reached (08006)."""

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = dict(fields) if fields else error_fields("FATAL", CONNECTION_FAILURE, message)

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", CONNECTION_FAILURE)


class ServerOwner(Protocol):
    """What a server connection calls on the client session it is attached to."""

    def relay_from_server(self, conn: ServerConn, data: bytes) -> int:
        """Forward `data` to the client; returns the bytes used (the rest is incomplete)."""
        ...

    def forward_raw(self, data: bytes) -> None:
        """Write bytes to the client as they are."""
        ...

    def on_server_lost(self, conn: ServerConn) -> None: ...

    def pause_client(self) -> None:
        """The server's socket buffer is full: stop reading the client."""
        ...

    def resume_client(self) -> None: ...


class ServerConn(RelayServer, asyncio.Protocol):
    """See the module docstring. `backend` names the server in its pool (the dbproxy's "primary"
    or a replica's name). The fields the relay reads per answer, `data_received` and
    `set_attached` are `RelayServer`'s (relay.py: compiled, an extension type)."""

    def __init__(self, backend: str, address: tuple[str, int], key: tuple[Any, ...]) -> None:
        self.backend = backend
        self.address = address
        self.key = key  # the pool's key: (backend, user, database, startup options)
        self.transport: asyncio.Transport | None = None
        self.direct: DirectSend | None = None  # send(2) straight to its socket (proxy/core/sendnow.py)
        self.params: dict[str, str] = {}
        self.pid = 0
        self.secret = 0
        self.status = b"I"
        self.closed = False
        self.session: ServerOwner | None = None
        self.prepared: dict[str, str | None] = {}
        self.groups: deque[SyncGroup] = deque()
        self.open_group: SyncGroup | None = None  # messages sent since the last Sync
        self.counted = False  # counted in the owner daemon's outstanding queries of this backend
        # What the owner may send elsewhere if this server dies before the first byte of its
        # answer is forwarded (the dbproxy: a read sent to a replica); None otherwise.
        self.replay: list[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None  # query timeout
        self.copy = False
        self.errored = False  # an ErrorResponse since the last ReadyForQuery
        self.created_at = time.time()
        self.last_used = time.monotonic()
        self.sent_at = 0.0  # when the oldest group in flight was sent (query latency)
        self.received = 0  # bytes from the server: has it said anything since (the dbproxy's faults.py)?
        self.fatal: dict[str, str] | None = None  # a FATAL the server sent before closing
        self._rest = b""  # an incomplete message, kept until the rest arrives
        self._skip = 0  # bytes of a large message still to pass through unframed
        self._internal = True
        self._owner = None  # the session, when its relay is called directly (set_attached)
        self._inbox: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost_exc: Exception | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.direct = direct_send(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _bad_protocol(self, exc: PgProtocolError) -> None:
        """The server broke the protocol (RelayServer.data_received): drop the connection."""
        log.warning("server protocol error", extra={"backend": self.backend, "error": exc.message})
        self._lost_exc = ServerError(f"server {self.backend} sent bad protocol: {exc.message}")
        self.abort()

    def _frame(self, data: bytes) -> int:
        """Internal mode: whole messages into the inbox; returns the bytes used."""
        pos, n = 0, len(data)
        view = memoryview(data)
        while n - pos >= 5:
            length = _INT32.unpack_from(data, pos + 1)[0]
            if length < 4 or length > MAX_MESSAGE_LENGTH:
                raise PgProtocolError(f"invalid message length {length}")
            end = pos + 1 + length
            if end > n:
                break
            self._inbox.append(Message(_BYTE1[data[pos]], view[pos:end], 5))
            pos = end
        return pos

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._lost_exc is None:
            self._lost_exc = ServerError(f"server {self.backend} closed the connection")
        self._wake()
        session = self.session
        if session is not None:
            session.on_server_lost(self)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_client()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_client()

    # -- plumbing ---------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def write(self, data: bytes | memoryview) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def close(self) -> None:
        """Polite close: Terminate, then FIN."""
        if self.transport is not None and not self.closed:
            self.transport.write(encode.terminate())
            self.transport.close()
        self.closed = True

    @property
    def busy(self) -> bool:
        """Work in flight: a group awaiting ReadyForQuery, messages after the last Sync, COPY."""
        return bool(self.groups) or self.open_group is not None or self.copy

    async def _recv(self) -> Message:
        while not self._inbox:
            if self.closed:
                raise self._lost_exc or ServerError(f"server {self.backend} closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    # -- login --------------------------------------------------------------------------------

    async def login(self, user: str, password: str | None, database: str, options: Mapping[str, str]) -> None:
        """Startup and authentication; returns at the first ReadyForQuery. Raises ServerError."""
        self.write(encode.startup_message({"user": user, "database": database, **options}))
        scram: ScramClient | None = None
        while True:
            msg = await self._recv()
            t = msg.type
            if t == b"R":
                auth = decode_backend(msg)
                if isinstance(auth, AuthenticationOk):
                    continue
                if password is None:
                    raise ServerError(
                        f"server {self.backend} asks a password and none is configured",
                        error_fields("FATAL", "28P01", "the proxy has no password for the server"),
                    )
                if isinstance(auth, AuthenticationCleartextPassword):
                    self.write(encode.password_message(password))
                elif isinstance(auth, AuthenticationMD5Password):
                    self.write(encode.password_message(md5_password(user, password, auth.salt)))
                elif isinstance(auth, AuthenticationSASL):
                    if "SCRAM-SHA-256" not in auth.mechanisms:
                        raise ServerError(f"server offers no SCRAM-SHA-256: {auth.mechanisms}")
                    scram = ScramClient(user, password)
                    self.write(encode.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
                elif isinstance(auth, AuthenticationSASLContinue) and scram is not None:
                    self.write(encode.sasl_response(scram.handle_server_first(auth.data)))
                elif isinstance(auth, AuthenticationSASLFinal) and scram is not None:
                    scram.handle_server_final(auth.data)
                else:
                    raise ServerError(f"server {self.backend} asks an unsupported authentication")
            elif t == b"S":
                ps = decode_backend(msg)
                self.params[ps.name] = ps.value
            elif t == b"K":
                key = decode_backend(msg)
                self.pid, self.secret = key.pid, key.secret
            elif t == b"E":
                raise ServerError("server refused the login", decode_backend(msg).fields)
            elif t == b"Z":
                self.status = bytes(msg.body)
                return
            # NoticeResponse, NegotiateProtocolVersion: nothing to do

    # -- the proxy's own statements -------------------------------------------------------------

    async def simple_query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run `sql` (simple protocol) and return its rows as text. Raises ServerError (with the
        server's fields) if it failed. Notifications that arrive meanwhile go to the session."""
        internal_before = self._internal
        self._internal = True
        try:
            self.write(encode.query(sql))
            rows: list[tuple[str | None, ...]] = []
            error: dict[str, str] | None = None
            while True:
                msg = await self._recv()
                t = msg.type
                if t == b"D":
                    values = decode_backend(msg).values
                    rows.append(tuple(None if v is None else v.decode() for v in values))
                elif t == b"E":
                    error = decode_backend(msg).fields
                elif t == b"S":
                    ps = decode_backend(msg)
                    self.params[ps.name] = ps.value
                    if self.session is not None:
                        self.session.forward_raw(bytes(msg.raw))
                elif t == b"A" and self.session is not None:
                    self.session.forward_raw(bytes(msg.raw))
                elif t == b"Z":
                    self.status = bytes(msg.body)
                    break
            if error is not None:
                raise ServerError(error.get("M", "query failed"), error)
            return rows
        finally:
            self._internal = internal_before
            # Messages that raced in after ReadyForQuery belong to the session's relay.
            if not self._internal and self._inbox and self.session is not None:
                data = b"".join(bytes(m.raw) for m in self._inbox)
                self._inbox.clear()
                self.session.relay_from_server(self, data)


class QueryResult:
    """What a simple Query (or an extended-protocol group) answered, collected whole
    (`collect_query`, `collect_answer`): the last statement's columns, every DataRow, each
    CommandComplete tag, the first ErrorResponse, the server's other messages for the client
    (NoticeResponse, ParameterStatus), as bytes, and the raw ParameterDescription,
    RowDescription and NoData messages (`described`: what a Describe answered), and a COPY TO
    STDOUT's CopyOutResponse and CopyData messages as sent (`copy_out`, `copy_data`)."""

    __slots__ = ("columns", "copy_data", "copy_out", "described", "error", "other", "rows", "status", "tags")

    def __init__(self) -> None:
        self.columns: list[Any] = []  # FieldDescription of the last RowDescription
        self.rows: list[tuple[bytes | None, ...]] = []
        self.tags: list[str] = []
        self.error: dict[str, str] | None = None
        self.other: list[bytes] = []
        self.described: list[bytes] = []
        self.copy_out: bytes | None = None  # a COPY TO STDOUT's CopyOutResponse, as sent
        self.copy_data: list[bytes] = []  # its CopyData messages, as sent
        self.status = b"I"


async def collect_query(conn: ServerConn, sql: str) -> QueryResult:
    """Run `sql` on `conn` (simple protocol) and collect the whole answer, up to ReadyForQuery,
    even when the connection is attached to a session: what a proxy that merges several servers'
    answers needs (the shard router's scatter/gather). Raises ServerError if the connection is
    lost."""
    return await collect_answer(conn, encode.query(sql))


async def collect_answer(conn: ServerConn, payload: bytes, *, extended: bool = False) -> QueryResult:
    """Write `payload` (a Query, or extended-protocol messages ending with one Sync: `extended`)
    and collect the answer up to its ReadyForQuery, as `collect_query`. A COPY FROM STDIN the
    statement starts is failed at once (CopyFail: the caller has no rows to send)."""
    internal_before = conn._internal
    conn._internal = True
    out = QueryResult()
    try:
        conn.write(payload)
        while True:
            msg = await conn._recv()
            t = msg.type
            if t == b"D":
                out.rows.append(decode_backend(msg).values)
            elif t == b"T":
                out.columns = list(decode_backend(msg).fields)
                out.described.append(bytes(msg.raw))
            elif t in (b"t", b"n"):
                out.described.append(bytes(msg.raw))
            elif t == b"C":
                out.tags.append(decode_backend(msg).tag)
            elif t == b"E":
                if out.error is None:
                    out.error = decode_backend(msg).fields
            elif t == b"Z":
                out.status = conn.status = bytes(msg.body)
                return out
            elif t in (b"N", b"S", b"A"):
                if t == b"S":
                    ps = decode_backend(msg)
                    conn.params[ps.name] = ps.value
                out.other.append(bytes(msg.raw))
            elif t == b"H":
                out.copy_out = bytes(msg.raw)
            elif t == b"d":
                out.copy_data.append(bytes(msg.raw))
            elif t == b"G":
                # The server ignores the Sync it got during copy-in: it needs one after the failure.
                conn.write(encode.copy_fail("COPY FROM STDIN is not supported here")
                           + (encode.sync() if extended else b""))
            # EmptyQueryResponse, ParseComplete, BindComplete, ...: nothing to collect
    finally:
        conn._internal = internal_before


async def end_open_group(conn: ServerConn) -> None:
    """Send a Sync for the messages `conn` has since its last Sync and drop the answer up to the
    ReadyForQuery (the client has had the answers to those messages; the proxy moves the rest of
    the client's group to another server). Raises ServerError if the connection is lost."""
    internal_before = conn._internal
    conn._internal = True
    try:
        conn.write(encode.sync())
        while True:
            msg = await conn._recv()
            if msg.type == b"Z":
                conn.status = bytes(msg.body)
                conn.open_group = None
                return
    finally:
        conn._internal = internal_before


async def open_server(
    backend: str,
    address: tuple[str, int],
    key: tuple[Any, ...],
    *,
    user: str,
    password: str | None,
    database: str,
    options: Mapping[str, str],
    timeout: float,
) -> ServerConn:
    """Connect and log in within `timeout` seconds; ServerError on any failure."""
    loop = asyncio.get_running_loop()

    async def connect() -> ServerConn:
        _, conn = await loop.create_connection(lambda: ServerConn(backend, address, key), *address)
        try:
            await conn.login(user, password, database, options)
        except BaseException:
            conn.abort()
            raise
        return conn

    try:
        return await asyncio.wait_for(connect(), timeout)
    except ServerError:
        raise
    except PgProtocolError as exc:
        raise ServerError(
            f"server {backend}: {exc.message}", error_fields("FATAL", exc.sqlstate, exc.message)
        ) from None
    except (TimeoutError, OSError) as exc:
        what = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        raise ServerError(f"cannot connect to server {backend} at {address[0]}:{address[1]}: {what}") from None


async def send_cancel(address: tuple[str, int], pid: int, secret: int, timeout: float = 5.0) -> None:
    """A CancelRequest on a new connection (the server answers nothing and closes)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    except (TimeoutError, OSError):
        return
    try:
        writer.write(encode.cancel_request(pid, secret))
        await asyncio.wait_for(writer.drain(), timeout)
        await asyncio.wait_for(reader.read(1), timeout)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


