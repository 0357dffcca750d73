"""The dbproxy session's client side, its hot half: a statement from the client's bytes to the
server's write.

`SessionCore` is the first base of `ClientSession` (proxy/dbproxy/session.py, which adds the
framed path, the slow paths and what happens when a server goes away). Here is what every
statement of the commonest shapes runs:

    data_received (one whole simple Query, or the unnamed statement's Parse/Bind/[Describe]/
        Execute/Sync: recognised by their headers) -> _query / _unnamed_packet
        -> _dispatch_at (the batch's server: the one in flight, or a decision) -> _route
        (the session router) -> _send (the sync-group bookkeeping, the client's bytes written)

and the framed path (`ClientSession._ready_message`) ends in the same `_dispatch_at`, `_route`
and `_send`.

This module is compiled (proxy/_native.py); sessioncore.pxd makes `SessionCore` an extension type
deriving from the relay's `RelaySession` (proxy/pgfront/relay.py): the fields these methods read
and write per statement are C fields, the server connection's relay fields (`RelayServer`) and a
sync group's are read in C, and the methods call each other in C. The object fields are exposed to
Python as member descriptors (relay.py's `as_members`), so the interpreted rest of the session
reads and writes them as fast as an instance's own attributes. `ClientSession(SessionCore,
FrontendSession)`: a Python class may derive from an extension type and a class whose own layout
is that type's base (FrontendSession adds only an instance dict to `RelaySession`).

Interpreted (the pure-Python twin, this same source), `__slots__` stand for the C fields and the
whole-packet tests are inline (a call to scan.py's pure recogniser costs more than they do);
`_COMPILED` picks. `_dispatch` is the Python-visible entry of `_dispatch_at` (a subclass may
override it: the query cache's session); interpreted it is `_dispatch_at` itself, no call between.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from typing import Any

from proxy.core.sendnow import send
from proxy.pgfront.relay import RelaySession, SyncGroup, as_members
from proxy.pgwire import encode
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import Message
from proxy.pgwire.scan import _whole_typed

from .books import COMPILED as _BOOKS_COMPILED
from .classify_types import Target
from .dbadmin import DB_ADMIN_DETAILS, start_if_database_admin
from .failover_session import answer_aborted, lone_begin
from .large import LARGE_SQL_BYTES
from .quiesce import holds, through_gate
from .router import PRIMARY

__all__ = ["MAX_BATCH_BYTES", "SessionCore"]

MAX_BATCH_BYTES = 1 << 20
_MAX_BATCH = MAX_BATCH_BYTES  # compiled: a C global (sessioncore.pxd)
_UNPACK_INT32 = struct.Struct("!i").unpack_from
# Enum members as module globals (an attribute of an Enum class goes through EnumType's
# __getattr__ hook, ~0.7k instructions: docs/perf.md).
_T_PRIMARY = Target.PRIMARY
_T_REPLICA = Target.REPLICA
_PRIMARY = PRIMARY
_monotonic = time.monotonic  # per statement: a global, not an attribute of the module
_UNDECIDED: Any = object()  # _dispatch's default: the batch's decision is worked out there
_deque_append = deque.append  # a server connection's `groups` is a deque (server.py)
_MULTI_STATEMENT = "multi-statement"
_PRIMARY_NAME = PRIMARY  # compiled: a str global (sessioncore.pxd), for relay.pxd's _differs
_DB_ADMIN_DETAILS = DB_ADMIN_DETAILS  # compiled: a frozenset global (sessioncore.pxd)


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED


def _parse_on(prepared: dict[str, Any], name: str, raw: bytes, group: SyncGroup, out: list[Any],
              injected: bool) -> None:  # fmt: skip
    """Send a Parse to a server: the client's own, or one `injected` to re-create a statement
    there. A named statement the server still has and the client does not (it closed it on
    another server, or this is a re-preparation with other text) is closed first, by us. The
    flag of a client's named Parse is its name: if it fails, the client does not have it."""
    if name and name in prepared:
        out.append(encode.close(b"S", name))
        group.flags.append(True)
    prepared[name] = raw
    group.names.append(name)
    group.flags.append(True if injected else (name or False))
    out.append(raw)


_FIELDS = ("_avoid", "_count_in", "_count_route", "_plain", "_query_aux", "_query_decision", "_resend", "_unnamed",
           "aborted", "admin", "batch", "batch_bytes", "current", "framer", "inbox", "inflight", "last_route", "servers",
           "skip_until_sync", "statements", "waiting")  # fmt: skip


class SessionCore(RelaySession):
    """See the module docstring. The fields: `framer`, `inbox`, `waiting`, `skip_until_sync`,
    `admin`, `servers`, `current`, `statements`, `statements_run` (FrontendSession's: it sets
    them), and `batch`, `batch_bytes`, `last_route`, `_avoid`, `aborted`, `inflight`, `_resend`,
    `_plain` (ClientSession's); `_count_route`, `_count_in`, `_count_slot`: the last route
    counted, the RouteCounts it was counted in and its slot there (`_route_at`; `_count_route`
    None until a first route); `_query_decision`, `_query_aux`: the last whole Query's decision
    and its batch entry's ("query", decision), shared while the decision is the same object
    (`_query`, compiled only)."""

    # Compiled, `_count_slot` and `statements_run` are C Py_ssize_t (sessioncore.pxd): the
    # statement count is a C increment, where an object field made a new int per statement past
    # 256 and freed the last (~0.09k instructions).
    __slots__ = (*_FIELDS, "_count_slot", "statements_run")

    # -- asyncio.Protocol (client side) ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # The commonest cases on their own paths, without the framer and message queue: one whole
        # simple Query with nothing else pending (what psql and pgbench -M simple send), and one
        # whole Parse/Bind/Describe/Execute/Sync of the unnamed statement (pgbench -M extended,
        # psycopg, JDBC). Anything else, or anything these paths do not recognise, is framed.
        if _COMPILED:
            # A transport's bytes (anything else copied), read in C from here on: the first byte
            # of an untyped object is an item lookup and a Python int.
            raw = data if type(data) is bytes else bytes(data)
            c = raw[0]
        else:
            c = data[0]
        if (
            (c == 0x51 or c == 0x50)
            and self.phase == "ready"
            and not self.batch
            and not self.inbox
            and not self.waiting
            and not self.skip_until_sync
            and not self.admin
        ):
            framer = self.framer
            n = len(data)
            if not framer._have and n - 1 <= framer.max_message_length:
                if _COMPILED:
                    # The headers checked in C (scan.py's recogniser), the same tests as below.
                    end_p = _whole_typed(raw)
                    if end_p == 1:
                        self._query(raw)
                        return
                    if end_p and self._plain and n <= _MAX_BATCH and self._unnamed_packet(raw, n, end_p):
                        return
                elif c == 0x51:
                    if n > 6 and _UNPACK_INT32(data, 1)[0] == n - 1 and data.find(b"\0", 5) == n - 1:
                        # A transport's bytes as they are: bytes(data) is a generic call of the type.
                        self._query(data if type(data) is bytes else bytes(data))
                        return
                elif (self._plain and n <= _MAX_BATCH and n >= 5
                      and self._unnamed_packet(data if type(data) is bytes else bytes(data), n, 0)):  # fmt: skip
                    return
        if self.phase == "closed":
            return
        self._feed(data)  # FrontendSession's

    def _unnamed_packet(self, data: bytes, n: int, end_p: int) -> bool:
        """`data` (n >= 5 bytes, no message over the framer's limit) is exactly Parse of the unnamed
        statement, Bind of it to the unnamed portal, optionally Describe of that portal, Execute,
        Sync, with a Parse the daemon has already classified (`parse_cache`): run it as the
        framer and `_ready_message` would, with `data` written to the server as it came. False
        (nothing done) for anything else: the caller frames it. `end_p`: the Parse's length, when
        the compiled recogniser has checked the headers already (these tests are its pure twin's)."""
        if not end_p:
            unpack = _UNPACK_INT32
            end_p = 1 + unpack(data, 1)[0]
            # The Bind: its portal and statement names empty (two NULs after its header).
            if end_p < 5 or end_p + 7 > n or data[end_p] != 0x42 or data[end_p + 5] or data[end_p + 6]:
                return False
            pos = end_p + 1 + unpack(data, end_p + 1)[0]
            if pos < end_p + 7 or pos + 5 > n:
                return False
            if data[pos] == 0x44:  # Describe: of the unnamed portal only ('P', NUL)
                if unpack(data, pos + 1)[0] != 6 or pos + 7 > n or data[pos + 5] != 0x50 or data[pos + 6]:
                    return False
                pos += 7
            end_d = pos
            if pos + 5 > n or data[pos] != 0x45:  # Execute
                return False
            pos += 1 + unpack(data, pos + 1)[0]
            # The Sync, last and whole.
            if pos < end_d + 5 or pos != n - 5 or data[pos] != 0x53 or unpack(data, pos + 1)[0] != 4:
                return False
        # The session's last unnamed Parse, kept with what is made of it (`_unnamed`): clients
        # send the same one again and again (pgbench, a driver's repeated query), and a match
        # (compared in place, no slice, no hash of fresh bytes) reuses its bytes, its Message,
        # its batch entry and its statement, leaving one Message (Bind to Sync) per packet. It
        # holds while the daemon's classifier is the one it was classified by (reload replaces
        # the classifier and the parse cache together: daemon.py).
        memo = self._unnamed
        d = self.d
        if memo is not None and memo[0] is d.cache:
            raw_p = memo[1]
            if _COMPILED:
                same = _same_prefix(data, raw_p, end_p)  # noqa: F821 (sessioncore.pxd: memcmp)
            else:
                same = len(raw_p) == end_p and data.startswith(raw_p)
        else:
            same = False
        if not same:
            raw_p = data[:end_p]
            parsed = self.d.parse_cache.get(raw_p)
            if parsed is None or parsed[0]:  # not seen yet (classified by _ready_message), or named
                return False
            decision = parsed[1]
            m_p = Message(b"P", raw_p, 5)
            memo = (d.cache, raw_p, (m_p, ("parse", "", raw_p, decision)), ("use", "", raw_p, decision),
                    (raw_p, decision), decision)  # fmt: skip
            self._unnamed = memo
        decision = memo[5]
        statements = self.statements
        # Compiled, a lookup costs less than setting the same value again (interpreted, the
        # `get` call costs more than the store).
        if not _COMPILED or statements.get("") is not memo[4]:
            statements[""] = memo[4]
        # The batch _ready_message would make, with Bind to Sync as one entry: what it does to a
        # batch (route, send with the statement re-created where missing, count its Syncs for a
        # failed send, replay it) is the Bind's, then the Sync's, and these are its bytes.
        if _COMPILED:
            m_s = Message.__new__(Message)
            m_s.type, m_s.raw, m_s._header = b"S", _tail(data, end_p), 5  # noqa: F821 (sessioncore.pxd)
        else:
            m_s = Message(b"S", data[end_p:], 5)
        batch = [memo[2], (m_s, memo[3])]
        try:
            self._dispatch_at(batch, decision, data)
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
        except Exception:
            self._internal_error()
        return True

    def _query(self, raw: bytes) -> None:
        """A whole Query message `raw` (checked: one NUL-terminated string) in the ready phase,
        with nothing batched: dispatched without the framer and the message queue."""
        try:
            # d.classify_query, one call less. Compiled: the cache is an extension type whose
            # get_bytes is called in C (classify_cache.pxd), the text copied out without a slice
            # object (sessioncore.pxd's _query_text).
            if _COMPILED:
                d = self.d
                cache = d.cache
                decision = cache.get_bytes(_query_text(raw))  # noqa: F821 (sessioncore.pxd)
                # The cache hands out one Decision per key: a session repeating a statement's
                # shape (pgbench's SELECT) gets the same object, and its ("query", decision)
                # pair, only ever read, is kept and shared instead of made and freed per statement.
                if decision is self._query_decision:
                    aux = self._query_aux
                else:
                    aux = ("query", decision)
                    self._query_decision = decision
                    self._query_aux = aux
                m = Message.__new__(Message)
                m.type, m.raw, m._header = b"Q", raw, 5
            else:
                decision = self.d.cache.get_bytes(raw[5:-1])
                aux = ("query", decision)
                m = Message(b"Q", raw, 5)
            if self._plain:
                self._dispatch_at([(m, aux)], decision, raw)
            else:
                self.batch.append((m, aux))
                self._dispatch()
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
        except Exception:
            self._internal_error()

    # -- routing --------------------------------------------------------------------------------

    def _decision(self, batch: list[tuple[Message, Any]]) -> Any:
        """The batch's decision: the first that needs the primary, else the first (None: no
        message of it was classified, e.g. a lone Sync)."""
        first = None
        for _, aux in batch:
            if aux is None:
                continue
            kind = aux[0]
            if kind == "query":
                d = aux[1]
            elif kind == "use" or kind == "parse" or kind == "dup":
                d = aux[3]
            else:  # "close"
                continue
            if d.target is _T_PRIMARY:
                return d
            if first is None:
                first = d
        return first

    def _dispatch(self, batch: list[tuple[Message, Any]] | None = None, decision: Any = _UNDECIDED,
                  whole: bytes | None = None) -> None:  # fmt: skip
        """Route and send the batch: see `_dispatch_at` (the pure twin's `_dispatch` is it)."""
        self._dispatch_at(batch, decision, whole)

    def _dispatch_at(self, batch: list[tuple[Message, Any]] | None = None, decision: Any = _UNDECIDED,
                     whole: bytes | None = None) -> None:  # fmt: skip
        """Route and send the batch (`self.batch`, or `batch` from data_received's whole-packet
        paths, with its `decision` and `whole`: its messages' bytes as they came, see `_send`)."""
        if batch is None:
            batch, self.batch, self.batch_bytes = self.batch, [], 0
        if self.aborted is not None:
            answer_aborted(self, batch)  # its transaction died with the old primary
            return
        conn = self.current
        # conn.busy inlined, here and in _send: a property call costs about as much as the rest
        # of this test (callgrind: docs/perf.md).
        if conn is not None and not conn.closed and (conn.groups or conn.open_group is not None or conn.copy):
            self.inflight = None
            SessionCore._send(self, conn, batch, whole)
            return
        if decision is _UNDECIDED:
            decision = SessionCore._decision(self, batch)
        d = self.d
        router = self.router
        if d.follower is not None:
            # Following Patroni (failover_session.py, quiesce.py); nothing of it runs otherwise.
            self.inflight = decision
            if decision is not None and (decision.pins_session or
                                         (decision.detail == "session-reset" and self.sets.statements)):  # fmt: skip
                self.sets.note(batch, router.in_transaction)
            self._resend = batch if lone_begin(batch, decision) else None
            if decision is not None and holds(self, decision):
                # Writes are paused (a planned switchover) or held (a failover): wait at the gate
                # even on the primary connection the session has.
                self._start_async(through_gate(self, batch, decision))
                return
        if decision is None:
            # Sync/Close/Execute alone: where the session's last statement ran.
            target = router.transaction_backend
            if not target:
                target = self.last_route[0] if self.last_route is not None else _PRIMARY
            servers = self.servers
            conn = servers.get(target)
            if conn is not None and not conn.closed:
                SessionCore._send(self, conn, batch, whole)
                return
            self._start_async(self._route_async(batch, None, target))
            return
        # The decision's fields, the clock and the router are read once here for _route_at too
        # (compiled, the clock's is a generic attribute lookup, ~150 instructions; `dec` is typed
        # Decision, sessioncore.pxd, so its fields are read in C).
        dec = decision
        replica = dec.target is _T_REPLICA
        catalog = False
        if replica:
            # A WAL position may be owed first (causal.py: fetched on the proxy's own connection).
            # The clock is asked only when a bound can apply: a plain read in the default mode
            # with nothing owed (the common case) skips the call, and so does a read inside a
            # transaction or a pinned session (`owed` says False for them: a tpcb-like script's
            # SELECT, after the first commit has left a commit LSN owed).
            clock = d.clock
            catalog = clock.global_mode or dec.reads_catalog
            if (
                (catalog or router.needs_commit_lsn)
                and router.transaction_backend is None
                and not router.pinned
                and clock.owed(router, decision)
            ):
                self._start_async(self._route_async(batch, decision, None))
                return
        detail = dec.detail
        # Compiled, a frozenset global (sessioncore.pxd): its contains in C, not the generic protocol.
        if detail in _DB_ADMIN_DETAILS and start_if_database_admin(self, batch, decision):
            return  # DROP/ALTER DATABASE: the proxy's idle connections to it go first (dbadmin.py)
        if _COMPILED:
            # A Route is a tuple subclass, whose [0] goes through Python's __getitem__ (~0.8k
            # instructions): sessioncore.pxd's _route_target reads the item in C.
            target = _route_target(SessionCore._route_at(self, dec, replica, catalog, detail))  # noqa: F821
        else:
            target = SessionCore._route_at(self, dec, replica, catalog, detail)[0]
        servers = self.servers
        conn = servers.get(target)
        if conn is not None and not conn.closed:
            SessionCore._send(self, conn, batch, whole)
        else:
            self._start_async(self._route_async(batch, decision, target))

    def _route(self, decision: Any) -> Any:
        """The route of `decision` (the session router's), counted and remembered."""
        replica = decision.target is _T_REPLICA
        catalog = replica and (self.d.clock.global_mode or decision.reads_catalog)
        return SessionCore._route_at(self, decision, replica, catalog, decision.detail)

    def _route_at(self, decision: Any, replica: bool, catalog: Any, detail: str) -> Any:
        """`_route` with what the caller has read of the decision already: `replica` (its target
        is a replica), `catalog` (for a replica: the clock's global mode or a catalog read, which
        bound the read by a WAL position), `detail`."""
        d = self.d
        router = self.router
        # The router looks at the replicas only for a read outside a transaction and a pin; the
        # views are built only then. The monitor fills in each replica's lag.
        floor = None
        if replica and router.transaction_backend is None and not router.pinned:
            if self._avoid:
                views = d.replica_views(self._avoid)
            else:
                # The monitor's shared views as they are (a C field compiled: `monitor` is typed
                # MonitorViews, books.pxd), built by its `views()` only when a poll reset them.
                monitor = d.monitor
                views = monitor._views
                if views is None:
                    views = monitor.views()
            if catalog:  # `floor` is None otherwise
                floor = d.clock.floor(decision)
        else:
            views = ()
        if _COMPILED:
            now = _c_monotonic()  # noqa: F821 (sessioncore.pxd: cpython.time's, the same clock)
        else:
            now = _monotonic()
        # Positional, with the decision's fields read here already: compiled, a C call of the
        # cpdef method (session_router.pxd) instead of a keyword call of `route` through Python.
        route = router.route_at(decision, replica, detail, now, views, d.outstanding, floor)
        self.last_route = route
        if _COMPILED:
            # The classifier's details are its literals: the same object, or another length.
            self._multi = _is_str(detail, _MULTI_STATEMENT)  # noqa: F821 (sessioncore.pxd)
        else:
            self._multi = detail == "multi-statement"
        # Counted in the daemon's RouteCounts (books.py) by slot: the router gives the same Route
        # object statement after statement, so the slot of the session's last one is reused
        # (the identity tests: no Route hashed, no int made, compiled).
        counts = d.route_counts
        if counts is None:  # a daemon that has not set it (DbProxyDaemon does): its metrics'
            counts = d.route_counts = d.metrics.routes
        if route is not self._count_route or counts is not self._count_in:
            self._count_slot = counts.slot(route)
            self._count_route = route
            self._count_in = counts
        if _COMPILED:
            counts._n[self._count_slot] += 1  # the C array (books.pxd); the slot is counts' own
        elif _BOOKS_COMPILED:
            counts.add(self._count_slot)  # this twin with the compiled books (a stale build)
        else:
            counts._counts[self._count_slot] += 1
        return route

    # -- sending to a server --------------------------------------------------------------------

    def _send(self, conn: Any, batch: list[tuple[Message, Any]], whole: bytes | None = None) -> None:
        """Send `batch` to `conn`, re-creating there the statements it uses. `whole`: the batch
        is one of data_received's whole packets (a Query, or the unnamed statement's Parse, Bind,
        [Describe,] Execute, Sync) and these are its bytes: nothing is ever injected into such a
        packet (its Bind uses the statement its own Parse makes), so it is written as it came,
        with the loop's bookkeeping for those messages."""
        group = conn.open_group  # None: the next message starts a new group
        was_busy = conn.groups or group is not None or conn.copy  # conn.busy (see _dispatch)
        prepared = conn.prepared
        if whole is not None:
            if group is None:
                # Compiled: made in C (sessioncore.pxd), not by a generic call of the type.
                group = _new_group() if _COMPILED else SyncGroup()  # noqa: F821
            aux = batch[0][1]
            # Compiled, "use" against "query" by length first (a PyUnicode_Compare call otherwise).
            if (_is_str(aux[0], "query") if _COMPILED else aux[0] == "query"):  # noqa: F821 (sessioncore.pxd)
                group.by_query = True
                prepared.pop("", None)  # a simple query destroys the unnamed statement
            else:  # _parse_on of the client's unnamed statement
                # Compiled, set only when not the same bytes already (_unnamed_packet's memo).
                if not _COMPILED or prepared.get("") is not aux[2]:
                    prepared[""] = aux[2]
                group.names.append("")
                # Its flag would be False (the client's own: forwarded), and it would be the
                # group's last: the relay forwards a ParseComplete that finds no flag just the
                # same, so none is kept.
            if _COMPILED:
                _deque_append(conn.groups, group)  # deque.append, without looking the method up
            else:
                conn.groups.append(group)
            conn.open_group = None
            out = None
        else:
            out = []
            for msg, aux in batch:
                if group is None:
                    group = SyncGroup()
                t = msg.type
                if t == b"P":
                    if aux[0] == "dup":
                        # The server must have the client's statement to answer 42P05 as direct. Its
                        # flag: what the statement becomes if the Parse succeeds after all (an earlier
                        # Parse of it in the client's pipeline failed).
                        if prepared.get(aux[1]) != aux[2]:
                            _parse_on(prepared, aux[1], aux[2], group, out, True)
                        group.flags.append((aux[1], aux[4], aux[5]))
                        out.append(msg.raw)
                        continue
                    _parse_on(prepared, aux[1], aux[2], group, out, False)
                    continue
                if aux is not None and aux[0] == "use":
                    have = prepared.get(aux[1])
                    if have is not aux[2] and have != aux[2]:  # `is`: a large one compares slowly
                        _parse_on(prepared, aux[1], aux[2], group, out, True)
                elif t == b"C":
                    if aux is not None:
                        prepared.pop(aux[1], None)
                    group.flags.append(False)
                out.append(msg.raw)
                if t == b"S" or t == b"Q" or t == b"F":
                    if t != b"S":
                        group.by_query = True
                        prepared.pop("", None)  # a simple query destroys the unnamed statement
                    conn.groups.append(group)
                    group = None
            conn.open_group = group
        self.current = conn
        conn.replay = None
        router = self.router
        backend = conn.backend  # compiled: a str (compared in C, its length first: relay.pxd)
        if (not was_busy and (_differs(backend, _PRIMARY_NAME) if _COMPILED else backend != _PRIMARY)  # noqa: F821
                and router.transaction_backend is None):  # fmt: skip
            conn.replay = batch
        elif batch is self._resend and not was_busy:
            conn.replay = batch  # failover_session.py: a lone BEGIN, sent again if its primary dies
        if not was_busy:
            d = self.d
            d.started(conn)
        if out is None:
            transport = conn.transport
            if transport is not None:  # conn.write, inlined (not closed: see the callers)
                if _COMPILED:
                    send(transport, conn.direct, whole)  # send(2) where safe (proxy/core/sendnow.py), a C call
                else:
                    transport.write(whole)
        elif len(out) == 1:
            conn.write(out[0])
        elif sum(map(len, out)) > LARGE_SQL_BYTES:
            for piece in out:  # a large Parse: not copied into one buffer
                conn.write(piece)
        else:
            conn.write(b"".join(out))
        self.statements_run += 1


# Interpreted, `_dispatch` is the implementation itself (no call in between); compiled, it is the
# Python-visible entry of the C method.
if not _COMPILED:
    setattr(SessionCore, "_dispatch", getattr(SessionCore, "_dispatch_at"))  # noqa: B010 (compiled: a C method)
else:
    as_members(SessionCore, _FIELDS)
