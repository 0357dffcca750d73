"""One client connection to `tierproxy dbproxy`: login, then statement-by-statement routing.

Theory of operation
-------------------
Login: the shared front end's session (proxy/pgfront/session.py, `FrontendSession`): the
client's startup packet (SSLRequest, TLS), the proxy's own authentication, then a server
connection for the primary (or, if the primary is unreachable, a usable replica: the daemon's
`login_candidates`) whose ParameterStatus values and BackendKeyData (its real pid and secret) the
client gets: it is the client's own connection for the whole session.

Server to client: `FrontendSession.relay_from_server` scans and forwards; this subclass decides
what a client sees when one of its servers goes away (`on_server_lost`).

Statements: client messages are framed and grouped into *batches* ending at Sync, Flush, Query or
FunctionCall (or 1 MiB). Everything up to a Sync is one implicit transaction on the server, so a
batch is routed as a whole: its classifier decisions (each Parse's SQL, each Bind/Describe's
statement as classified at its Parse) combine to the first that needs the primary, else the first;
the session's `SessionRouter` turns that into a backend. While a server has a batch in flight (no
ReadyForQuery yet, or a COPY), later batches go to the same server without a new decision, so a
pipelining client never has its stream split. A batch whose server cannot change any more is sent
as far as it has arrived (`_forward_now`), so errors come back mid-pipeline as direct.

Prepared statements: the session keeps every named statement's Parse message. Before a Bind or
Describe runs on a server where that statement does not exist (or exists with other text), the
Parse is sent there first, its ParseComplete swallowed (`SyncGroup.flags`); a Parse whose name
exists on the server but no longer for the client is preceded by an injected Close. A client's
Parse of a name it still has goes to a server holding that statement, which answers 42P05 as
direct; a client's Parse that fails is forgotten. Session pooling ends with DISCARD ALL, so a
server connection starts each session with no statements.

Failures: a replica that cannot be connected is skipped for this batch and the batch re-routed;
the client's primary connection lost ends the session with the server's FATAL (as direct); a
replica lost with nothing in flight is forgotten (the next statement goes elsewhere); lost with
a statement in flight outside a transaction, the client gets ERROR 08006 and ReadyForQuery and
keeps its session; lost inside a transaction, while pinned or in COPY (state the proxy cannot
rebuild), the client gets FATAL 57P01/08006 and is disconnected. Malformed input gets 08P01 and a
close. Backpressure: a client that does not read pauses its servers, a server that does not read
pauses the client.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import ServerConn, ServerError, SyncGroup, error_fields
from proxy.pgfront.session import ADMIN_DATABASE, FrontendSession, cstrings
from proxy.pgwire import encode, scan
from proxy.pgwire.errors import (
    ADMIN_SHUTDOWN,
    CONNECTION_FAILURE,
    PROGRAM_LIMIT_EXCEEDED,
    QUERY_CANCELED,
    PgProtocolError,
)
from proxy.pgwire.framing import Message

from .classify_types import Decision, Reason, Target
from .dbadmin import DB_ADMIN_DETAILS, start_if_database_admin
from .failover_session import (
    LossAction,
    SessionSets,
    answer_aborted,
    lone_begin,
    move_primary,
    primary_lost,
    replay_sets,
)
from .large import LARGE_DECISION, LARGE_SQL_BYTES, large_parse_name, large_query_aux, refuse_large_message
from .quiesce import holds, through_gate
from .router import PRIMARY, Route, SessionRouter

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["ADMIN_DATABASE", "ClientSession"]

log = logging.getLogger("tierproxy.dbproxy")

MAX_BATCH_BYTES = 1 << 20
# FunctionCall (the fast-path interface): it can call anything, so the primary.
_CALL = ("query", Decision(Target.PRIMARY, Reason.WRITE, detail="call"))
_CONTROL = frozenset((b"d", b"c", b"f", b"X"))  # CopyData/CopyDone/CopyFail, Terminate
_INT32 = struct.Struct("!i")
_UNPACK_INT32 = _INT32.unpack_from
# Enum members as module globals (an attribute of an Enum class goes through EnumType's
# __getattr__ hook, ~0.7k instructions: docs/perf.md).
_T_PRIMARY = Target.PRIMARY
_T_REPLICA = Target.REPLICA
_monotonic = time.monotonic  # per statement: a global, not an attribute of the module
_UNDECIDED: Any = object()  # _dispatch's default: the batch's decision is worked out there
# The whole-packet test of data_received in C (scan.whole_packet), where it is compiled; the pure
# build keeps its inline tests (a call costs more than they do, interpreted: docs/perf.md).
_WHOLE = scan.whole_packet if scan.COMPILED else None


def _parse_on(prepared: dict[str, Any], name: str, raw: bytes, group: SyncGroup, out: list[Any],
              *, injected: bool) -> None:  # fmt: skip
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


class ClientSession(FrontendSession):
    product = "tierproxy dbproxy"

    def __init__(self, daemon: DbProxyDaemon) -> None:
        super().__init__(daemon)
        self.d: DbProxyDaemon = daemon
        # on_commit: the clock's `acknowledged` is this call on its epochs (kept by reconfigure),
        # one call less per committed write.
        self.router = SessionRouter.from_config(daemon.cfg.routing, rotation_seed=secrets.randbelow(1 << 16),
                                                on_commit=daemon.clock.epochs.acknowledged)  # fmt: skip
        self.statements: dict[str, tuple[bytes, Decision]] = {}
        # (message, what _ready_message made of it); one entry may be a run of messages ending
        # with a Sync, typed Sync (_unnamed_packet: Bind to Sync, its aux the Bind's).
        self.batch: list[tuple[Message, Any]] = []
        self.batch_bytes = 0
        self.last_route: Route | None = None
        self._avoid: dict[str, float] = {}  # replica -> monotonic time until which to skip it
        # Following Patroni (failover_session.py): the session's plain SETs, the decision of the
        # batch last routed (None: unknown), the error owed for a transaction lost on the old
        # primary, whether the SETs must be replayed on the next primary connection.
        self.sets = SessionSets()
        self.inflight: Decision | None = None
        self.aborted: dict[str, str] | None = None
        self.replay_pending = False
        self.moved = 0
        self._resend: list[tuple[Message, Any]] | None = None  # a lone BEGIN: may be sent again
        # The whole-packet paths of data_received skip the batch machinery (the decision and the
        # bytes go straight to _dispatch and _send): only where nothing overrides _dispatch (the
        # query cache's session looks at each batch there).
        self._plain = type(self)._dispatch is ClientSession._dispatch

    # -- asyncio.Protocol (client side) ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # The commonest cases on their own paths, without the framer and message queue: one whole
        # simple Query with nothing else pending (what psql and pgbench -M simple send), and one
        # whole Parse/Bind/Describe/Execute/Sync of the unnamed statement (pgbench -M extended,
        # psycopg, JDBC). Anything else, or anything these paths do not recognise, is framed.
        c = data[0]
        if (
            (c == 0x51 or c == 0x50)
            and self.phase == "ready"
            and not self.batch
            and not self.inbox
            and not self.waiting
            and not self.skip_until_sync
            and not self.admin
            and not self.framer.buffered
        ):
            n = len(data)
            if n - 1 <= self.framer.max_message_length:
                if _WHOLE is not None:
                    # Compiled: the headers checked in C (scan.whole_packet), the same tests as below.
                    end_p = _WHOLE(data)
                    if end_p == 1:
                        self._query(bytes(data))
                        return
                    if end_p and self._plain and n <= MAX_BATCH_BYTES and self._unnamed_packet(bytes(data), n, end_p):
                        return
                elif c == 0x51:
                    if n > 6 and _UNPACK_INT32(data, 1)[0] == n - 1 and data.find(b"\0", 5) == n - 1:
                        self._query(bytes(data))
                        return
                elif self._plain and n <= MAX_BATCH_BYTES and n >= 5 and self._unnamed_packet(bytes(data), n):
                    return
        if self.phase == "closed":
            return
        self._feed(data)

    def _unnamed_packet(self, data: bytes, n: int, end_p: int = 0) -> bool:
        """`data` (n >= 5 bytes, no message over the framer's limit) is exactly Parse of the unnamed
        statement, Bind of it to the unnamed portal, optionally Describe of that portal, Execute,
        Sync, with a Parse the daemon has already classified (`parse_cache`): run it as the
        framer and `_ready_message` would, with `data` written to the server as it came. False
        (nothing done) for anything else: the caller frames it. `end_p`: the Parse's length, when
        the compiled `scan.whole_packet` has checked the headers already (these tests are its
        pure twin's)."""
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
        raw_p = data[:end_p]
        parsed = self.d.parse_cache.get(raw_p)
        if parsed is None or parsed[0]:  # not seen yet (classified by _ready_message), or named
            return False
        decision = parsed[1]
        self.statements[""] = (raw_p, decision)
        # The batch _ready_message would make, with Bind to Sync as one entry: what it does to a
        # batch (route, send with the statement re-created where missing, count its Syncs for a
        # failed send, replay it) is the Bind's, then the Sync's, and these are its bytes.
        batch = [(Message(b"P", raw_p, 5), ("parse", "", raw_p, decision)),
                 (Message(b"S", data[end_p:], 5), ("use", "", raw_p, decision))]  # fmt: skip
        try:
            self._dispatch(batch, decision, data)
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
        except Exception:
            self._internal_error()
        return True

    def _refuse_message(self, exc: PgProtocolError) -> bool:
        if exc.sqlstate == PROGRAM_LIMIT_EXCEEDED and self.phase == "ready":
            refuse_large_message(self, exc)  # large.py: the client may still be sending it
            return True
        return False

    # -- input ----------------------------------------------------------------------------------

    def _inbox_drained(self) -> None:
        if self.batch and not self.waiting and self.phase == "ready" and self._forward_now():
            self._dispatch()

    def _forward_now(self) -> bool:
        """Send an unfinished batch (no Sync or Flush yet) as it stands, when its server cannot
        change any more: its Sync group is already on a server, or it needs the primary. The
        server then runs each message as it comes and its errors reach the client at once, as
        direct (asyncpg's executemany stops at the first error). A read waits for its Sync: a
        later message of the group may still need the primary."""
        conn = self.current
        if conn is not None and conn.open_group is not None and not conn.closed:
            return True
        if self.skip_until_sync or self.admin:
            return False
        d = self._decision(self.batch)
        return d is not None and d.target is _T_PRIMARY

    def _query(self, raw: bytes) -> None:
        """A whole Query message `raw` (checked: one NUL-terminated string) in the ready phase,
        with nothing batched: dispatched without the framer and the message queue."""
        try:
            aux = ("query", self.d.cache.get_bytes(raw[5:-1]))  # d.classify_query, one call less
            if self._plain:
                self._dispatch([(Message(b"Q", raw, 5), aux)], aux[1], raw)
            else:
                self.batch.append((Message(b"Q", raw, 5), aux))
                self._dispatch()
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
        except Exception:
            self._internal_error()

    def _ready_message(self, msg: Message) -> None:
        t = msg.type
        if self.skip_until_sync or self.admin or t in _CONTROL:
            self._control_message(msg)
            return
        raw = msg.raw
        batch = self.batch
        # The common extended-protocol messages first, with as little work as possible.
        if t == b"B":
            # Unnamed portal, unnamed statement; anything shorter is cstrings' 08P01.
            if len(raw) > 6 and raw[5] == 0 and raw[6] == 0:
                name = ""
            else:
                (_, stmt), _ = cstrings(bytes(raw), 5, 2)
                name = stmt.decode("utf-8", "replace")
            st = self.statements.get(name)
            batch.append((msg, ("use", name, st[0], st[1]) if st is not None else None))
            self.batch_bytes += len(raw)
            return
        if t == b"E" or t == b"H":
            batch.append((msg, None))
            self.batch_bytes += len(raw)
            if t == b"H":
                self._dispatch()
            elif self.batch_bytes > MAX_BATCH_BYTES:
                self._dispatch()
            return
        if t == b"S":
            batch.append((msg, None))
            self._dispatch()
            return
        if t == b"P":
            if len(raw) > LARGE_SQL_BYTES:  # not parsed, not copied (large.py)
                rawb: Any = raw
                name, decision = large_parse_name(raw), LARGE_DECISION
            else:
                rawb = bytes(raw)
                parsed = self.d.parse_cache.get(rawb)
                if parsed is None:
                    (name_b, sql), _ = cstrings(rawb, 5, 2)
                    parsed = (name_b.decode("utf-8", "replace"), self.d.classify(sql.decode("utf-8", "replace")))
                    self.d.remember_parse(rawb, parsed)
                name, decision = parsed
            old = self.statements.get(name) if name else None
            if old is not None:
                # The client has this statement: PostgreSQL answers 42P05 and keeps the old one.
                batch.append((msg, ("dup", name, old[0], old[1], rawb, decision)))
            else:
                self.statements[name] = (rawb, decision)
                batch.append((msg, ("parse", name, rawb, decision)))
            self.batch_bytes += len(raw)
            return
        if t == b"Q":
            if len(raw) > LARGE_SQL_BYTES:
                batch.append((msg, large_query_aux(raw)))
            else:
                (sql,), _ = cstrings(bytes(raw), 5, 1)
                batch.append((msg, ("query", self.d.classify_query(sql))))
            self._dispatch()
            return
        if t == b"D" or t == b"C":
            if len(raw) == 7 and raw[5] == 0x50 and raw[6] == 0:  # the unnamed portal: nothing to track
                batch.append((msg, None))
                self.batch_bytes += 7
                return
            rawb = bytes(raw)
            if len(rawb) < 7:
                raise PgProtocolError(f"invalid {'Describe' if t == b'D' else 'Close'} message")
            kind = rawb[5:6]
            (name_b,), _ = cstrings(rawb, 6, 1)
            sname = name_b.decode("utf-8", "replace")
            aux: Any = None
            if kind == b"S":
                if t == b"D":
                    aux = self._statement_aux(sname)
                else:
                    aux = ("close", sname)
                    self.statements.pop(sname, None)
            elif kind != b"P":
                raise PgProtocolError("invalid Describe/Close kind")
            batch.append((msg, aux))
            self.batch_bytes += len(raw)
            return
        if t == b"F":
            batch.append((msg, _CALL))
            self._dispatch()
            return
        raise PgProtocolError(f"unexpected message type {t!r}")

    def _control_message(self, msg: Message) -> None:
        t = msg.type
        if self.skip_until_sync:
            # After an error in an extended-protocol batch the server skips to Sync; so do we.
            if t == b"S":
                self.skip_until_sync = False
                self.forward_raw(encode.ready_for_query(self._status()))
            return
        if t in b"dcf":
            conn = self.current
            if conn is not None and not conn.closed and conn.busy:
                conn.write(msg.raw)
            elif self.batch:
                self._add(msg, None)
            # Outside COPY, PostgreSQL ignores these too (PostgresMain: "Accept but ignore").
            return
        if t == b"X":
            if self.answers_due():
                # Answers are still coming for what the client synced before Terminate: deliver
                # them first, as a server would, then close (relay_from_server). Nothing after
                # the Terminate is run.
                self.terminating = True
                self.waiting = True
                self.inbox.clear()
                if self.transport is not None:
                    self.transport.pause_reading()
                return
            # Nothing more will come (messages after the last Sync are never answered: asyncpg
            # sends Parse/Describe/Flush, then Terminate): close now. A server left mid-group is
            # dropped, not pooled (release_server), so its implicit transaction rolls back.
            self.close()
            return
        self._admin_message(msg)

    def _statement_aux(self, name: str) -> Any:
        st = self.statements.get(name)
        if st is None:
            return None  # unknown statement: the server will say so
        return ("use", name, st[0], st[1])

    def _add(self, msg: Message, aux: Any) -> None:
        self.batch.append((msg, aux))
        self.batch_bytes += len(msg.raw)

    # -- routing --------------------------------------------------------------------------------

    def _decision(self, batch: list[tuple[Message, Any]]) -> Decision | None:
        first: Decision | None = None
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
            self._send(conn, batch, whole)
            return
        if decision is _UNDECIDED:
            decision = self._decision(batch)
        if self.d.follower is not None:
            # Following Patroni (failover_session.py, quiesce.py); nothing of it runs otherwise.
            self.inflight = decision
            if decision is not None and (decision.pins_session or
                                         (decision.detail == "session-reset" and self.sets.statements)):  # fmt: skip
                self.sets.note(batch, self.router.in_transaction)
            self._resend = batch if lone_begin(batch, decision) else None
            if decision is not None and holds(self, decision):
                # Writes are paused (a planned switchover) or held (a failover): wait at the gate
                # even on the primary connection the session has.
                self._start_async(through_gate(self, batch, decision))
                return
        if decision is None:
            # Sync/Close/Execute alone: where the session's last statement ran.
            target = self.router.transaction_backend or (
                self.last_route.target if self.last_route is not None else PRIMARY
            )
            conn = self.servers.get(target)
            if conn is not None and not conn.closed:
                self._send(conn, batch, whole)
                return
            self._start_async(self._route_async(batch, None, target))
            return
        if decision.target is _T_REPLICA:
            # A WAL position may be owed first (causal.py: fetched on the proxy's own connection).
            # The clock is asked only when a bound can apply: a plain read in the default mode
            # with nothing owed (the common case) skips the call, and so does a read inside a
            # transaction or a pinned session (`owed` says False for them: a tpcb-like script's
            # SELECT, after the first commit has left a commit LSN owed).
            clock = self.d.clock
            router = self.router
            if (
                (clock.global_mode or decision.reads_catalog or router.needs_commit_lsn)
                and router.transaction_backend is None
                and not router.pinned
                and clock.owed(router, decision)
            ):
                self._start_async(self._route_async(batch, decision, None))
                return
        if decision.detail in DB_ADMIN_DETAILS and start_if_database_admin(self, batch, decision):
            return  # DROP/ALTER DATABASE: the proxy's idle connections to it go first (dbadmin.py)
        route = self._route(decision)
        conn = self.servers.get(route.target)
        if conn is not None and not conn.closed:
            self._send(conn, batch, whole)
        else:
            self._start_async(self._route_async(batch, decision, route.target))

    def _route(self, decision: Decision) -> Route:
        d = self.d
        router = self.router
        # The router looks at the replicas only for a read outside a transaction and a pin; the
        # views are built only then. The monitor fills in each replica's lag.
        floor = None
        if decision.target is _T_REPLICA and router.transaction_backend is None and not router.pinned:
            views = d.replica_views(self._avoid) if self._avoid else d.monitor.views()
            clock = d.clock
            if clock.global_mode or decision.reads_catalog:  # `floor` is None otherwise
                floor = clock.floor(decision)
        else:
            views = ()
        route = router.route(decision, _monotonic(), views, outstanding=d.outstanding, floor_lsn=floor)
        self.last_route = route
        self._multi = decision.detail == "multi-statement"
        routes = d.metrics.routes
        routes[route] = routes.get(route, 0) + 1  # keyed (target, reason): Route is that tuple
        return route

    async def _route_async(
        self, batch: list[tuple[Message, Any]], decision: Decision | None, target: str | None
    ) -> None:
        """The slow path: fetch a commit LSN, connect a server, or fail over between replicas."""
        if decision is not None and target is None:
            await self.d.clock.settle(self.router, decision)
            target = self._route(decision).target
        assert target is not None
        for _ in range(len(self.d.pools.addresses) + 1):
            try:
                conn = await self._attach(target)
            except ServerError as exc:
                if target != PRIMARY and decision is not None and not self.router.in_transaction:
                    # This replica is unreachable: skip it for a moment and decide again.
                    self._avoid[target] = time.monotonic() + self.d.cfg.monitor.interval
                    target = self._route(decision).target
                    continue
                self._fail_batch(batch, exc)
                return
            if target == PRIMARY and self.replay_pending and self.phase != "closed":
                self.replay_pending = False
                try:
                    await replay_sets(self, conn)
                except ServerError as exc:
                    self.fatal(ADMIN_SHUTDOWN, f"could not restore the session's settings on the new primary: {exc}")
                    return
            if self.phase == "closed":
                return
            if conn.closed:
                # Lost while the settings were replayed (on_server_lost saw it idle): nothing
                # would answer a statement written to it.
                self._fail_batch(batch, conn._lost_exc or ServerError(f"server {target} closed the connection"))
                return
            self._send(conn, batch)
            return
        self._fail_batch(batch, ServerError("no server is available"))

    # -- sending to a server --------------------------------------------------------------------

    def _send(self, conn: ServerConn, batch: list[tuple[Message, Any]], whole: bytes | None = None) -> None:
        """Send `batch` to `conn`, re-creating there the statements it uses. `whole`: the batch
        is one of data_received's whole packets (a Query, or the unnamed statement's Parse, Bind,
        [Describe,] Execute, Sync) and these are its bytes: nothing is ever injected into such a
        packet (its Bind uses the statement its own Parse makes), so it is written as it came,
        with the loop's bookkeeping for those messages."""
        group = conn.open_group  # None: the next message starts a new group
        was_busy = conn.groups or group is not None or conn.copy  # conn.busy (see _dispatch)
        prepared = conn.prepared
        out: list[bytes | memoryview] = []
        if whole is not None:
            if group is None:
                group = SyncGroup()
            aux = batch[0][1]
            if aux[0] == "query":
                group.by_query = True
                prepared.pop("", None)  # a simple query destroys the unnamed statement
            else:  # _parse_on of the client's unnamed statement
                prepared[""] = aux[2]
                group.names.append("")
                # Its flag would be False (the client's own: forwarded), and it would be the
                # group's last: the relay forwards a ParseComplete that finds no flag just the
                # same, so none is kept.
            conn.groups.append(group)
            conn.open_group = None
        else:
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
                            _parse_on(prepared, aux[1], aux[2], group, out, injected=True)
                        group.flags.append((aux[1], aux[4], aux[5]))
                        out.append(msg.raw)
                        continue
                    _parse_on(prepared, aux[1], aux[2], group, out, injected=False)
                    continue
                if aux is not None and aux[0] == "use":
                    have = prepared.get(aux[1])
                    if have is not aux[2] and have != aux[2]:  # `is`: a large one compares slowly
                        _parse_on(prepared, aux[1], aux[2], group, out, injected=True)
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
        if not was_busy and conn.backend != PRIMARY and self.router.transaction_backend is None:
            conn.replay = batch
        elif batch is self._resend and not was_busy:
            conn.replay = batch  # failover_session.py: a lone BEGIN, sent again if its primary dies
        if not was_busy:
            self.d.started(conn)
        if whole is not None:
            if conn.transport is not None:  # conn.write, inlined (not closed: see the callers)
                conn.transport.write(whole)
        elif len(out) == 1:
            conn.write(out[0])
        elif sum(map(len, out)) > LARGE_SQL_BYTES:
            for piece in out:  # a large Parse: not copied into one buffer
                conn.write(piece)
        else:
            conn.write(b"".join(out))
        self.statements_run += 1

    # -- a server lost ---------------------------------------------------------------------------

    def on_server_lost(self, conn: ServerConn) -> None:
        backend = conn.backend
        if self.servers.get(backend) is conn:
            del self.servers[backend]
        was_busy = conn.busy
        in_txn = self.router.transaction_backend == backend
        self.d.server_lost(conn)
        if self.phase == "closed":
            return
        if self.terminating and not self.answers_due():
            self.close()
            return
        if self.phase == "login" and not was_busy:
            return  # the login task sees the failure itself
        if conn._skip and self.phase == "ready":
            self.close()  # lost in the middle of a large message: the client's stream is cut
            return
        if backend == PRIMARY and self.phase == "ready":
            # The client's own server connection (its BackendKeyData is this server's): when it
            # goes (pg_terminate_backend, a crash, idle_session_timeout), the session ends with
            # the server's own error, as it would direct. Following Patroni, a lost primary is a
            # failover: the session moves where its state allows (failover_session.py).
            loss = primary_lost(
                following=self.d.follower is not None, busy=was_busy, in_transaction=in_txn, copy=conn.copy,
                pinned=self.router.pinned, movable_state=self.sets.movable, inflight=self.inflight,
                resendable=conn.replay is not None, old=f"{conn.address[0]}:{conn.address[1]}",
            )  # fmt: skip
            if loss.action is LossAction.END:
                if self.d.follower is not None:
                    self.d.follower.sessions_cut += 1
                    self.d.follower.session_losses["end"] = self.d.follower.session_losses.get("end", 0) + 1
                self.end_with_server_error(conn)
                return
            self.replay_pending = self.replay_pending or bool(self.sets.statements)
            move_primary(self, conn, loss)
            return
        keep_state = backend == PRIMARY and self.router.pinned
        if not was_busy and not in_txn and not keep_state:
            return
        if conn.replay is not None and not in_txn and self.phase == "ready" and not self.waiting:
            # A read that got no answer yet: run it on another backend instead.
            batch, conn.replay = conn.replay, None
            conn.groups.clear()
            conn.open_group = None
            if self.current is conn:
                self.current = None
            self._avoid[backend] = time.monotonic() + self.d.cfg.monitor.interval
            self.d.metrics.retried += 1
            decision = self._decision(batch)
            self.router.on_ready_for_query(b"I")
            if decision is None:
                self._start_async(self._route_async(batch, None, PRIMARY))
            else:
                self._start_async(self._route_async(batch, decision, None))
            return
        sqlstate = CONNECTION_FAILURE
        message = f"server connection to {backend} was lost"
        if conn.fatal is not None:
            sqlstate = conn.fatal.get("C", sqlstate)
            message = conn.fatal.get("M", message)
        if in_txn or keep_state or conn.copy or self.phase != "ready":
            if sqlstate not in (ADMIN_SHUTDOWN, CONNECTION_FAILURE):
                sqlstate = CONNECTION_FAILURE
            self.fatal(sqlstate, message)
            return
        # 57014: the proxy dropped a server that ignored a timeouts.query cancel (faults.py).
        code = QUERY_CANCELED if sqlstate == QUERY_CANCELED else CONNECTION_FAILURE
        self.send_error(error_fields("ERROR", code, f"{message}; the statement may not have completed"))
        pending = len(conn.groups)
        if conn.open_group is not None:
            self.skip_until_sync = True
        conn.groups.clear()
        conn.open_group = None
        if pending:
            self.router.on_ready_for_query(b"I")
            self.forward_raw(encode.ready_for_query(b"I") * pending)

