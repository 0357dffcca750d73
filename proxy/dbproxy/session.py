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

A session reading from one replica (`balance = "session"`) that the router moves to another gives
its connection to the old one back to the pool (`_left_replica`).

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
import time
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import ServerConn, ServerError, error_fields
from proxy.pgfront.session import ADMIN_DATABASE, FrontendSession, cstrings
from proxy.pgwire import encode
from proxy.pgwire.errors import (
    ADMIN_SHUTDOWN,
    CONNECTION_FAILURE,
    PROGRAM_LIMIT_EXCEEDED,
    QUERY_CANCELED,
    PgProtocolError,
)
from proxy.pgwire.framing import Message

from .classify_types import Decision, Reason, Target
from .failover_session import (
    LossAction,
    SessionSets,
    move_primary,
    primary_lost,
    replay_sets,
)
from .large import (
    LARGE_DECISION,
    LARGE_SQL_BYTES,
    large_parse_name,
    large_query_aux,
    refuse_large_message,
)
from .router import PRIMARY, Route, SessionRouter
from .sessioncore import MAX_BATCH_BYTES, SessionCore

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["ADMIN_DATABASE", "ClientSession"]

log = logging.getLogger("tierproxy.dbproxy")

# FunctionCall (the fast-path interface): it can call anything, so the primary.
_CALL = ("query", Decision(Target.PRIMARY, Reason.WRITE, detail="call"))
_CONTROL = frozenset((b"d", b"c", b"f", b"X"))  # CopyData/CopyDone/CopyFail, Terminate
# Enum members as module globals (an attribute of an Enum class goes through EnumType's
# __getattr__ hook, ~0.7k instructions: docs/perf.md).
_T_PRIMARY = Target.PRIMARY


class ClientSession(SessionCore, FrontendSession):
    """See the module docstring. The hot half, from the client's bytes of a statement to the
    server's write (data_received's whole packets, `_dispatch`, `_route`, `_send`), is
    `SessionCore`'s (sessioncore.py: compiled, an extension type); this class adds the framed path,
    the slow paths and what a lost server means."""

    product = "tierproxy dbproxy"

    def __init__(self, daemon: DbProxyDaemon) -> None:
        super().__init__(daemon)
        self.d: DbProxyDaemon = daemon
        # on_commit: the clock's `acknowledged` is this call on its epochs (kept by reconfigure),
        # one call less per committed write.
        # sessions, on_move: with balance = "session" the router binds the session to a replica by
        # the daemon's count of sessions per replica, and says when it leaves one (_left_replica).
        self.router = SessionRouter.from_config(daemon.cfg.routing, rotation_seed=secrets.randbelow(1 << 16),
                                                on_commit=daemon.clock.epochs.acknowledged,
                                                sessions=daemon.replica_sessions, on_move=self._left_replica)  # fmt: skip
        self.statements: dict[str, tuple[bytes, Decision]] = {}
        # (message, what _ready_message made of it); one entry may be a run of messages ending
        # with a Sync, typed Sync (_unnamed_packet: Bind to Sync, its aux the Bind's).
        self.batch: list[tuple[Message, Any]] = []
        self.batch_bytes = 0
        self.last_route: Route | None = None
        self._count_route = self._count_in = None  # _route_at's slot of its last route counted
        self._count_slot = 0
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
        # bytes go straight to _dispatch_at and _send): only where nothing overrides _dispatch
        # (the query cache's session looks at each batch there).
        self._plain = type(self)._dispatch is SessionCore._dispatch
        self._unnamed: tuple[Any, ...] | None = None  # _unnamed_packet's memo of the last unnamed Parse
        self._query_decision = self._query_aux = None  # _query's last ("query", decision) (compiled only)

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

    def _left_replica(self, name: str) -> None:
        """The router moved the session's reads off replica `name` (balance = "session": it went
        down, fell behind the session's read-your-writes position, or the session was pinned):
        its connection there goes back to the pool (closed if broken), so the session holds one
        replica connection. A connection still busy (a pipeline) stays until the session ends."""
        conn = self.servers.get(name)
        if conn is None or conn.busy:
            return
        del self.servers[name]
        if self.current is conn:
            self.current = None
        self.d.release_server(conn)

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

