"""The relay's hot state and loop: what a server's answer costs on its way to the client.

`relay` is the proxy's hottest function: it forwards a server's bytes to the client session,
scanning message headers in place and acting only on the few message types that matter
(`_SPECIAL`: ReadyForQuery, ParseComplete/CloseComplete, ErrorResponse, CopyInResponse,
ParameterStatus). `RelayServer.data_received` is the server side of it: the bytes a server
connection reads go to its session's relay, or to its own framer when the proxy itself is
talking to the server (login, its own queries).

This module is compiled (proxy/_native.py) and is also its own pure-Python twin. Compiled, the
three classes here are extension types (relay.pxd): the fields the relay reads and writes per
answer are C fields, the loop reads the bytes through a pointer, and a server connection reaches
its session's relay by a C call. Everything else a server connection or session holds lives in
their Python subclasses, `ServerConn` (server.py) and `FrontendSession` (session.py), which add
`asyncio.Protocol`: a Python class may derive from one extension type plus slot-less classes.
The object fields are exposed to Python as member descriptors, as a class's `__slots__` are, so
interpreted code reads and writes them as fast as an instance's own attributes (proxy/_members.pxd,
`as_members`; docs/perf.md, "The relay's hot state").

Interpreted, `__slots__` stand for the C fields; the loop is the one the session had (a `struct`
call for the length word, the cheapest interpreted: docs/perf.md), picked by `_COMPILED`.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from proxy.core.sendnow import send
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import DEFAULT_MAX_MESSAGE_LENGTH, Message
from proxy.pgwire.messages import decode_backend

__all__ = ["COMPILED", "RelayBooks", "RelayRouter", "RelayServer", "RelaySession", "SyncGroup", "as_members", "relay"]

_MAX_LENGTH = DEFAULT_MAX_MESSAGE_LENGTH
_UNPACK_INT32 = struct.Struct("!i").unpack_from
_BYTE1 = tuple(bytes((i,)) for i in range(256))
# Server message types the relay looks at: ParseComplete '1', CloseComplete '3', ReadyForQuery
# 'Z', ErrorResponse 'E', CopyInResponse 'G', ParameterStatus 'S'. Everything else passes through.
_SPECIAL = bytes(1 if i in b"13ZEGS" else 0 for i in range(256))
_popleft = deque.popleft  # a server connection's `groups` is a deque (server.py)
_DEQUE = deque


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's: the loop reads the length word the
# way that suits how this module runs.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED


class SyncGroup:
    """Messages sent up to one Sync (or one Query/FunctionCall) and not yet answered."""

    __slots__ = ("by_query", "flags", "names")

    def __init__(self) -> None:
        # One per Parse/Close sent: True = injected by us; a name = the client's Parse creating
        # that statement; (name, Parse, decision) = the client's Parse of a name it has (42P05
        # expected); False = the client's own otherwise. A list: one is made per statement, and
        # a deque (a 64-slot block) cost ~0.5k instructions more to make and free; the relay
        # takes the first with pop(0) from the few a group holds.
        self.flags: list[Any] = []
        self.names: list[str] = []  # statements parsed in this group (unknown if it fails)
        self.by_query = False  # ended by Query/FunctionCall (not Sync)


def relay(s: Any, conn: Any, data: bytes) -> int:
    """Forward a server's bytes to the client of session `s`, acting on the few message types
    that matter (see `_SPECIAL`); returns how many bytes were used (the rest is an incomplete
    message). A large message of any other type is forwarded as it arrives (`conn._skip`), so a
    big row or COPY chunk is never held whole in memory."""
    if s.ending is not None:
        # The message our FATAL was waiting for has been forwarded whole: now the FATAL.
        sqlstate, message = s.ending
        s.ending = None
        s.fatal(sqlstate, message)
        return len(data)
    n = len(data)
    pos = start = 0
    pieces = None
    p = data  # compiled: a pointer to the bytes (relay.pxd); every index read is under n
    special = _SPECIAL
    unpack = _UNPACK_INT32
    while n - pos >= 5:
        t = p[pos]
        if _COMPILED:
            # `length` is a 64-bit integer: the first byte is widened before its shift; a word
            # over 2**31 is the protocol's negative Int32, as struct reads it.
            length = p[pos + 1]
            length = (length << 24) | (p[pos + 2] << 16) | (p[pos + 3] << 8) | p[pos + 4]
            if length > 0x7FFFFFFF:  # (a literal over 2**31 would be compared as Python ints)
                length -= 0x100000000
        else:
            length = unpack(data, pos + 1)[0]
        if length < 4 or length > _MAX_LENGTH:
            raise PgProtocolError(f"invalid message length {length} from server")
        end = pos + 1 + length
        if not special[t]:
            if end > n:
                conn._skip = end - n
                pos = n
                break
            pos = end
            continue
        if end > n:
            break
        if t == 0x5A:  # ReadyForQuery
            status = _BYTE1[p[pos + 5]] if length > 4 else b""
            conn.status = status
            if _COMPILED:
                # The same, with the hooks as C calls where they are the relay's bases' (_answered).
                _answered(s, conn, status)
            else:
                groups = conn.groups
                if groups:
                    groups.popleft()
                conn.copy = False
                if not groups and conn.open_group is None:  # not conn.busy (inlined: see _send)
                    s.d.finished(conn)
                elif conn.timer is not None:
                    s.d.restart_query_timer(conn)  # a statement timeout is per statement
                failed = conn.errored and not s._multi
                conn.errored = False
                s.router.on_ready_for_query(status, failed=failed)
        elif t == 0x31 or t == 0x33:  # ParseComplete, CloseComplete
            g = conn.groups[0] if conn.groups else conn.open_group
            if g is not None and g.flags:
                flag = g.flags.pop(0)
                if flag is True:
                    if pieces is None:
                        pieces = []
                    pieces.append(data[start:pos])  # injected by us: not for the client
                    start = end
                elif isinstance(flag, tuple):  # a Parse expected to fail (42P05) succeeded
                    name, raw, decision = flag
                    s.statements[name] = (raw, decision)
                    conn.prepared[name] = raw
        elif t == 0x45:  # ErrorResponse
            err = decode_backend(Message(b"E", data[pos:end], 5))
            if err.severity in ("FATAL", "PANIC"):
                conn.fatal = err.fields  # reported when the connection closes
                if pieces is None:
                    pieces = []
                pieces.append(data[start:pos])
                start = end
            else:
                conn.errored = True
                g = conn.groups[0] if conn.groups else conn.open_group
                if g is not None:
                    for flag in g.flags:
                        if isinstance(flag, str):  # the client's Parse of it never completed
                            s.statements.pop(flag, None)
                    g.flags.clear()  # the server skips the rest of the group
                    prepared = conn.prepared
                    for name in g.names:
                        if name in prepared:
                            prepared[name] = None
        elif t == 0x47:  # CopyInResponse
            conn.copy = True
            groups = conn.groups
            if groups and not groups[0].by_query:
                # Extended-protocol COPY: the server ignores Syncs during copy-in, so the
                # group stays open until the Sync after CopyDone.
                conn.open_group = groups.popleft()
                groups.clear()
        elif t == 0x53:  # ParameterStatus
            ps = decode_backend(Message(b"S", data[pos:end], 5))
            conn.params[ps.name] = ps.value
        pos = end
    if start == 0 and pos == n:
        chunk = data
    else:
        chunk = data[start:pos]
    if pieces is not None:
        pieces.append(chunk)
        chunk = b"".join(pieces)
    if chunk:
        conn.replay = None
        transport = s.transport
        phase = s.phase  # compiled: a str, compared by relay.pxd's _differs (its length first)
        if transport is not None and (_differs(phase, "closed") if _COMPILED else phase != "closed"):  # noqa: F821
            if _COMPILED:
                send(transport, s.direct, chunk)  # send(2) where safe (proxy/core/sendnow.py), a C call
            else:
                transport.write(chunk)
    if s.terminating and not s.answers_due():
        s.close()
    return pos


def _answered(s: Any, conn: Any, status: bytes) -> None:
    """Compiled only: what `relay` does at a ReadyForQuery after noting its status, as its pure
    twin does inline. The group it answers done; the daemon's `finished` (the server has nothing
    more in flight) or `restart_query_timer`, then the router's `on_ready_for_query`: C calls
    (cpdef methods, through the type's table) where the daemon is a `RelayBooks` and the router a
    `RelayRouter` (the dbproxy's Books and SessionRouter); a method call through Python for
    anything else (the shard's, a test's). A Python override of a hook is called either way (a
    cpdef method looks for one)."""
    left = _pop_answered(conn.groups)  # noqa: F821  # relay.pxd: C calls for a deque (groups left after it)
    conn.copy = False
    d = s.d
    if left == 0 and conn.open_group is None:  # not conn.busy
        if isinstance(d, RelayBooks):
            _as_books(d).finished(conn)  # noqa: F821  # relay.pxd: a cast, not a second type test
        else:
            d.finished(conn)
    elif conn.timer is not None:
        if isinstance(d, RelayBooks):
            _as_books(d).restart_query_timer(conn)  # noqa: F821
        else:
            d.restart_query_timer(conn)
    failed = conn.errored and not s._multi
    conn.errored = False
    r = s.router
    if isinstance(r, RelayRouter):
        _as_router(r).on_ready_for_query(status, failed)  # noqa: F821
    else:
        r.on_ready_for_query(status, failed=failed)


class RelayBooks:
    """What the relay calls on a session's daemon (`s.d`) at a ReadyForQuery, as a base class
    (the dbproxy's `Books`, books.py): compiled, an extension type whose hooks are cpdef methods,
    so the relay calls a subclass's in C (the lb's `UpstreamClient` pattern: the shared layer
    declares the base, the daemon derives). A daemon need not derive from it (the relay then calls
    its methods through Python); a Python subclass's override of a hook is honoured."""

    __slots__ = ()

    def finished(self, conn: Any) -> None:
        """A server went idle (its last ReadyForQuery): nothing, here."""

    def restart_query_timer(self, conn: Any) -> None:
        """A ReadyForQuery with more in flight on `conn` (its query timer running): nothing, here."""


class RelayRouter:
    """What the relay tells a session's router (`s.router`, pgfront/session.py's
    `TransactionState`) at each ReadyForQuery, as a base class (the dbproxy's `SessionRouter`):
    compiled, an extension type whose `on_ready_for_query` is a cpdef method (see `RelayBooks`).
    An override must take `failed` positionally too: compiled, the relay passes it so."""

    __slots__ = ()

    def on_ready_for_query(self, status: bytes, failed: bool = False) -> None:
        """The server's transaction status after a statement (`failed`: it ended with an error)."""


class RelaySession:
    """The relay's fields of a client session (`FrontendSession` sets them; see there): `d` (its
    daemon: finished, restart_query_timer; called in C where it is a `RelayBooks`), `router`
    (on_ready_for_query; in C where it is a `RelayRouter`), the client's
    `transport`, `phase`, `ending`, `terminating`, `_multi`. The relay also reads `statements`
    and calls `fatal`, `close` and `answers_due`."""

    __slots__ = ("_multi", "d", "direct", "ending", "phase", "router", "terminating", "transport")

    # relay_from_server(conn, data): `relay` as a method (no call in between, in either twin). A
    # subclass may override it; a server connection then calls the override (set_attached).
    relay_from_server = relay


class RelayServer:
    """The relay's fields of a server connection (`ServerConn` sets them; see there) and its
    `data_received`; `backend`, `closed` and `transport` are here for the dbproxy session's
    `_send` (proxy/dbproxy/sessioncore.py), which reads them per statement in C, and `counted`,
    `sent_at` and `timer` for the dbproxy's books (proxy/dbproxy/books.py: `started`/`finished`). `ServerConn` supplies `_frame`, `_wake` and `_bad_protocol` (internal mode
    and a server's bad protocol)."""

    __slots__ = ("_internal", "_owner", "_rest", "_skip", "backend", "closed", "copy", "counted", "direct", "errored",
                 "fatal", "groups", "open_group", "params", "prepared", "received", "replay", "sent_at", "session",
                 "status", "timer", "transport")  # fmt: skip

    def set_attached(self, session: Any) -> None:
        """Attach to a client session (None: back to internal mode). A session whose class keeps
        the relay as it is gets it by a direct call (`_owner`); an override, through the method."""
        self.session = session
        self._internal = session is None
        plain = isinstance(session, RelaySession) and type(session).relay_from_server is _RELAY_METHOD
        self._owner = session if plain else None

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self._skip:
            # The rest of a large message the session already started to forward: pass it on.
            k = self._skip
            if len(data) <= k:
                self._skip = k - len(data)
                self._pass(data)
                return
            self._pass(data[:k])
            data = data[k:]
            self._skip = 0
        if self._rest:
            data = self._rest + data
            self._rest = b""
        try:
            if self._internal or self.session is None:
                used = self._frame(data)  # type: ignore[attr-defined]
                self._wake()  # type: ignore[attr-defined]
            elif self._owner is not None:
                used = relay(self._owner, self, data)
            else:
                used = self.session.relay_from_server(self, data)
        except PgProtocolError as exc:
            self._bad_protocol(exc)  # type: ignore[attr-defined]
            return
        if used < len(data):
            self._rest = data[used:]

    def _pass(self, data: bytes) -> None:
        if self.session is not None:
            self.session.forward_raw(data)


# What `set_attached` compares a session's relay_from_server with (its class keeps this one).
_RELAY_METHOD = RelaySession.relay_from_server

# Compiled: the object fields as member descriptors, which CPython specialises as it does slots
# (proxy/_members.pxd): interpreted code reads and writes them as fast as the pure twin's.


def as_members(cls: type, names: tuple[str, ...]) -> None:
    """Compiled: the object fields `names` of the extension type `cls` (deriving from one of
    these) as member descriptors (proxy/_members.pxd). Interpreted: nothing (a class's
    `__slots__` are member descriptors already)."""
    if _COMPILED:
        _as_members(cls, names)  # noqa: F821


if _COMPILED:
    _bind_popleft(deque((1, 2, 3)))  # noqa: F821  # relay.pxd: deque.popleft as a C call
    _as_members(SyncGroup, ("by_query", "flags", "names"))  # noqa: F821
    _as_members(RelaySession, ("_multi", "d", "direct", "ending", "phase", "router", "terminating", "transport"))  # noqa: F821
    _as_members(RelayServer, ("backend", "closed", "copy", "counted", "direct", "errored", "fatal", "groups",  # noqa: F821
                              "open_group", "params", "prepared", "replay", "session", "status", "timer", "transport",
                              "_rest"))  # fmt: skip
