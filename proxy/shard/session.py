"""One client connection to `tierproxy shard`: login (the shared front end), then each simple
Query routed to its shard, or scattered to every shard and gathered.

Theory of operation
-------------------
Login is `FrontendSession`'s (proxy/pgfront/session.py): the client logs in to the router, and
gets the ParameterStatus and BackendKeyData of its first shard's connection (the first shard in
config order). Messages are handled one statement at a time: while a statement runs, the client's
later messages wait (`waiting`), so answers never interleave between shards.

A Query's plan comes from the daemon's `ShardRouter` (keys.py), then `txn.step` keeps a
transaction on one shard. The decision is carried out here:

* one shard, one statement: written to that shard's connection (attached to the session on first
  use, kept for the session) and its answer relayed as it comes (`relay_from_server`),
  ReadyForQuery included. When that connection is attached and idle, no reshard fence is up and
  nothing else is in flight, this runs synchronously as the message arrives (`_fast_query`: the
  client's Query bytes as received, no Task or Future; the relayed ReadyForQuery ends the wait);
  otherwise in a Task (`_query`, `_relay`), which can wait at the fence and attach;
* held statements first (BEGIN, SAVEPOINTs held until the transaction's shard is known): run on
  the shard and their answers dropped, as the client already had them;
* several shards: the statement (or each shard's part of a split INSERT) runs on every shard
  concurrently and the answers are collected whole (`collect_query`); a SELECT's rows are merged
  by gather.py (one RowDescription, the merged DataRows, one CommandComplete), other statements'
  tags are summed (`merge_command_tags`), RETURNING rows concatenated. An error from a shard is
  sent with the shard's name in its message; the other shards' work stays (no cross-shard
  atomicity outside a transaction, see docs/shard.md);
* `SET tierproxy.shard_key` and the router's own replies (BEGIN, a COMMIT with nothing sent)
  are answered here; refusals get the plan's SQLSTATE and message.

The transaction state follows what the shards say: each ReadyForQuery relayed updates it (a
multi-statement string may open or close a transaction on its shard).

The extended protocol (Parse/Bind/...) is extended.py's: statements of one shard, routed at Bind
with the bound key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import (
    ServerConn,
    ServerError,
    SyncGroup,
    collect_query,
    error_fields,
    send_cancel,
)
from proxy.pgfront.session import FrontendSession, cstrings
from proxy.pgwire import encode
from proxy.pgwire.errors import (
    CONNECTION_FAILURE,
    PgProtocolError,
)
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import FieldDescription

from . import copy_route, extended
from .gather import GatherPlan, Merged, merge, merge_command_tags, plan_gather
from .keys import All, Refuse, Session, SetKey, Some
from .txn import Forward, Reply, TxnState, step

if TYPE_CHECKING:
    from .daemon import ShardDaemon

__all__ = ["ShardSession"]

log = logging.getLogger("tierproxy.shard")

_EXTENDED = frozenset((b"P", b"B", b"D", b"E", b"C", b"H", b"F", b"S"))  # extended.py


class TxnTracker:
    """The session's transaction state (`TransactionState` for the relay): txn.py's `TxnState`,
    corrected by each ReadyForQuery of the shard that answered."""

    def __init__(self) -> None:
        self.state = TxnState()
        self.shard: str | None = None  # the shard whose answer is being relayed
        self.done: asyncio.Future[None] | None = None  # resolved at the relayed ReadyForQuery
        self.answered = False  # a ReadyForQuery was relayed (the session's fast path looks)

    @property
    def in_transaction(self) -> bool:
        return self.state.open

    def on_ready_for_query(self, status: bytes, *, failed: bool = False) -> None:
        shard = self.shard
        if shard is not None:
            if status == b"I":
                # Not when BEGIN is still held (no shard chosen yet): a statement that chose no
                # shard, such as psycopg's prepare (Parse, Sync), leaves the transaction pending.
                if not (self.state.open and self.state.shard is None):
                    self.state = TxnState()
            elif not self.state.open or self.state.shard != shard:
                self.state = TxnState(open=True, shard=shard)
        self.answered = True
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


class ShardSession(FrontendSession):
    product = "tierproxy shard"

    def __init__(self, daemon: ShardDaemon) -> None:
        super().__init__(daemon)
        self.d: ShardDaemon = daemon
        self.router: TxnTracker = TxnTracker()
        self.shard_key: str | None = None  # SET tierproxy.shard_key
        # The extended protocol (extended.py): named statements (name -> Parse message, SQL,
        # parameter types), the messages since the last Sync/Flush, the shard connection with a
        # group open (sent up to a Flush, no Sync yet), and the shard used last.
        self.ext_statements: dict[str, tuple[bytes, str, list[int]]] = {}
        self.ext_batch: list[tuple[bytes, Any]] = []
        self.ext_open: ServerConn | None = None
        self.ext_open_bound = False  # the open group has a Bind or Execute (it cannot move)
        self.last_shard: str | None = None
        self.collecting: set[ServerConn] = set()  # shards running this session's scatter now
        self.fence_gen = 0  # fence.py: the reshard generation this session's current work began in
        self._query_timer: asyncio.TimerHandle | None = None  # timeouts.query
        self.copy_in: copy_route.CopyIn | None = None  # a COPY FROM STDIN the router splits
        self._fast: ServerConn | None = None  # the connection running a fast-path Query (`_fast_query`)

    # -- timeouts.query ---------------------------------------------------------------------------

    def _start_async(self, coro: Any) -> None:
        """A statement (or a batch up to its Sync) starts: with `timeouts.query`, a timer that
        cancels it on its shards (CancelRequest) when it runs longer; the shards answer 57014 as
        with their own statement_timeout, and the session goes on."""
        super()._start_async(coro)
        q = self.d.cfg.timeouts.query
        if q > 0 and self.phase == "ready" and not self.admin:
            self._query_timer = asyncio.get_running_loop().call_later(q, self._query_timed_out)

    def _async_done(self, task: asyncio.Task[None]) -> None:
        if self._query_timer is not None:
            self._query_timer.cancel()
            self._query_timer = None
        super()._async_done(task)

    def _query_timed_out(self) -> None:
        self._query_timer = None
        targets = self.cancel_targets()
        if targets:
            self.d.metrics.query_timeouts += 1
            log.info("statement past timeouts.query: canceled", extra={"user": self.user,
                                                                       "shards": [c.backend for c in targets]})
        for conn in targets:
            self.d._spawn(send_cancel(conn.address, conn.pid, conn.secret))

    # -- input ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.phase == "closed":
            return
        if self._fast is not None and self.transport is not None:
            # More from the client while a fast-path Query runs (pipelining): read no further
            # until it is answered (`_fast_done` resumes), as `_start_async` does from the start.
            self.transport.pause_reading()
        self._feed(data)

    def _ready_message(self, msg: Message) -> None:
        t = msg.type
        if t == b"X":
            self.close()
            return
        if self.skip_until_sync:
            if t == b"S":
                self.skip_until_sync = False
                if self.ext_open is not None:
                    self._start_async(extended.end_skipped(self))
                else:
                    self.forward_raw(encode.ready_for_query(self._status()))
            return
        if self.admin:
            self._admin_message(msg)
            return
        if self.copy_in is not None:  # COPY FROM STDIN running (copy_route.py)
            self.copy_in.message(msg)
            return
        if t in _EXTENDED:
            extended.add_message(self, msg)
            return
        if t == b"Q":
            raw = bytes(msg.raw)
            (sql,), _ = cstrings(raw, 5, 1)
            pre = self._fast_query(raw, sql)
            if pre is not None:
                self._start_async(self._query(sql.decode("utf-8", "replace"), pre))
        elif t in (b"d", b"c", b"f"):
            return  # CopyData/CopyDone/CopyFail outside COPY: ignored, as PostgreSQL does
        else:
            raise PgProtocolError(f"unexpected message type {t!r}")

    def _status(self) -> bytes:
        st = self.router.state
        if st.failed:
            return b"E"
        return b"T" if st.open else b"I"

    def _reply(self, tag: str) -> None:
        self.forward_raw(encode.command_complete(tag) + encode.ready_for_query(self._status()))

    def _refuse(self, sqlstate: str, message: str) -> None:
        self.d.metrics.errors += 1
        self.send_error(error_fields("ERROR", sqlstate, message))
        self.forward_raw(encode.ready_for_query(self._status()))

    # -- one Query ------------------------------------------------------------------------------

    # -- the fast path: one statement for one shard on its attached connection ------------------

    def _fast_query(self, raw: bytes, sqlb: bytes) -> tuple[Any, Any, int] | None:
        """A Query whose plan is one statement on one shard whose connection is attached and idle,
        with no reshard fence and nothing else in flight: the client's message is written to that
        shard as it came and the relay forwards the answer; the session waits (no Task, no Future)
        until the relayed ReadyForQuery (`relay_from_server`) or the connection's loss. Returns
        None when done so, else what `_query` may reuse: (plan, router, reshard generation), or
        an empty tuple when nothing was planned."""
        d = self.d
        reshard = d.reshard
        if reshard.fence is not None or self.ext_open is not None or self.collecting:
            return ()
        try:
            sql = sqlb.decode("utf-8")  # not valid UTF-8: the slow path's replacement characters
        except UnicodeDecodeError:
            return ()
        head = sql.lstrip()[:1]
        if not head or head in "cC/;":  # empty, COPY, a leading comment (hints): the slow path
            return ()
        router = d.router
        plan = router.plan_query(sql, session_key=self.shard_key)
        tracker = self.router
        state, decision = step(tracker.state, plan, router.shards)
        if decision.__class__ is not Forward or decision.tag is not None or len(decision.parts) != 1:
            return (plan, router, reshard.gen)
        shard, stmts = decision.parts[0]
        conn = self.servers.get(shard)
        if len(stmts) != 1 or conn is None or conn.closed or conn._internal or conn.busy:
            return (plan, router, reshard.gen)
        if not tracker.state.open:
            self.fence_gen = reshard.gen  # as fence.py's gate for an idle session
        self.statements_run += 1
        tracker.state = state
        d.count_plan(plan, sql)
        self.last_shard = shard
        tracker.shard = shard
        tracker.answered = False
        group = SyncGroup()
        group.by_query = True
        conn.groups.append(group)
        self.current = conn
        d.started(conn)
        self.fast_wait(conn)
        # The client's bytes as received, unless the plan sends another text (a rewritten statement).
        conn.write(raw if stmts[0] == sql else encode.query(stmts[0]))
        return None

    def fast_wait(self, conn: ServerConn) -> None:
        """A fast-path Query (`_fast_query`) or Sync batch (extended.py `fast_sync`) was sent on
        `conn`: wait for its answer without a Task; `relay_from_server` ends the wait."""
        self._fast = conn
        # Later messages wait (`waiting`) as in `_start_async`, but the client's reading is paused
        # only if it sends more before the answer (`data_received`): pausing and resuming cost a
        # system call each per statement (epoll_ctl; io_uring_enter under uvloop's libuv), and a
        # client that waits for its answer, as most do, sends nothing meanwhile. (Resuming a
        # transport that is reading is a no-op without a system call, in asyncio and uvloop.)
        self.waiting = True
        q = self.d.cfg.timeouts.query
        if q > 0:
            self._query_timer = asyncio.get_running_loop().call_later(q, self._query_timed_out)

    def relay_from_server(self, conn: ServerConn, data: bytes) -> int:
        used = super().relay_from_server(conn, data)
        if self._fast is conn and self.router.answered:
            self._fast_done()
        return used

    def _fast_done(self) -> None:
        """The fast-path Query was answered (or its connection lost): as `_async_done`."""
        self._fast = None
        self.router.shard = None
        if self._query_timer is not None:
            self._query_timer.cancel()
            self._query_timer = None
        self.waiting = False
        if self.phase == "closed":
            return
        if self.transport is not None and not self.server_paused:
            self.transport.resume_reading()
        self._pump()

    # -- one Query (the general path) ------------------------------------------------------------

    async def _query(self, sql: str, pre: tuple[Any, ...] = ()) -> None:
        if not sql.strip().strip(";").strip():
            self.forward_raw(encode.empty_query_response() + encode.ready_for_query(self._status()))
            return
        fenced = await self.d.reshard.gate(self, ((sql, None),))  # a reshard's fence (fence.py)
        if fenced is not None:
            self._refuse(fenced.sqlstate, fenced.message)
            return
        router = self.d.router
        target = copy_route.copy_from_target(self, sql) if sql.lstrip()[:1] in "cC/" else None
        if target is not None:  # COPY FROM STDIN into a sharded table: rows split by key
            self.statements_run += 1
            await copy_route.start_copy_in(self, sql, target[0], target[1], list(router.shards))
            return
        if pre and pre[1] is router and pre[2] == self.d.reshard.gen and self.d.reshard.fence is None:
            plan = pre[0]  # planned by `_fast_query` just now, with this router and no fence since
        else:
            plan = router.plan_query(sql, session_key=self.shard_key)
        self.statements_run += 1
        tracker = self.router
        tracker.state, decision = step(tracker.state, plan, router.shards)
        if isinstance(decision, Refuse):
            self._refuse(decision.sqlstate, decision.message)
            return
        if isinstance(decision, Reply):
            self._reply(decision.tag)
            return
        if isinstance(decision, SetKey):
            self.shard_key = None if decision.key is None else str(decision.key)
            self._reply("SET" if decision.key is not None else "RESET")
            return
        if isinstance(decision, Session):
            await self._session_statement(sql, decision)
            return
        assert isinstance(decision, Forward)
        self.d.count_plan(plan, sql)
        if sql.lstrip()[:1] in "cC/" and copy_route.is_copy_from_stdin(sql):
            await self._copy_in(decision)  # a table in no group: every row to each shard
            return
        if len(decision.parts) == 1 and decision.tag is None:
            shard, stmts = decision.parts[0]
            await self._relay(shard, stmts)
            return
        gather = None
        if isinstance(plan, Some | All) and len(decision.parts) > 1:
            out = copy_route.copy_out_plan(sql) if sql.lstrip()[:1] in "cC/" else None
            if out is not None and len(out) == 2:
                self._refuse(*out)  # type: ignore[misc]
                return
            if out is not None:
                await copy_route.copy_out(self, [(sh, st[-1]) for sh, st in decision.parts], bool(out[0]))
                return
            g = plan_gather(sql)
            if isinstance(g, GatherPlan):
                gather = g
            elif _is_select(sql):
                self._refuse(g.sqlstate, g.message)
                return
        await self._scatter(decision, gather)

    async def _copy_in(self, decision: Forward) -> None:
        """COPY FROM STDIN of a table in no group: held statements (BEGIN) first, then the COPY
        on each shard of the decision, every row to each (copy_route.py)."""
        shards = []
        for shard, stmts in decision.parts:
            for held in stmts[:-1]:
                try:
                    res = await collect_query(await self._conn(shard), held)
                except ServerError as exc:
                    self._shard_failed(shard, exc)
                    return
                if res.error is not None:
                    self._shard_error(shard, res.error)
                    self.forward_raw(encode.ready_for_query(self._status()))
                    return
            shards.append(shard)
        await copy_route.start_copy_in(self, decision.parts[0][1][-1], None, None, shards)

    async def _session_statement(self, sql: str, plan: Session) -> None:
        """SET, SHOW, DISCARD, ...: on the transaction's shard, else SHOW on the first shard and
        the rest on every shard (so a SET holds wherever the session's statements go)."""
        st = self.router.state
        if st.shard is not None:
            await self._relay(st.shard, (sql,))
        elif plan.kind == "show" or len(self.d.router.shards) == 1:
            await self._relay(self.d.router.shards[0], (sql,))
        else:
            parts = tuple((s, (sql,)) for s in self.d.router.shards)
            await self._scatter(Forward(parts), None)

    async def _conn(self, shard: str) -> ServerConn:
        return await self._attach(shard)

    async def _relay(self, shard: str, stmts: tuple[str, ...]) -> None:
        """Held statements, then the last one relayed from `shard` as it answers."""
        try:
            conn = await self._conn(shard)
        except ServerError as exc:
            self._shard_failed(shard, exc)
            return
        for held in stmts[:-1]:
            try:
                res = await collect_query(conn, held)
            except ServerError as exc:  # lost meanwhile (on_server_lost has run)
                if self.phase != "closed":
                    self._shard_failed(shard, exc)
                return
            if res.error is not None:
                self._shard_error(shard, res.error)
                self.forward_raw(encode.ready_for_query(self._status()))
                return
        tracker = self.router
        loop = asyncio.get_running_loop()
        self.last_shard = shard
        tracker.shard = shard
        tracker.done = loop.create_future()
        group = SyncGroup()
        group.by_query = True
        conn.groups.append(group)
        self.current = conn
        self.d.started(conn)
        conn.write(encode.query(stmts[-1]))
        try:
            await tracker.done
        finally:
            tracker.done = None
            tracker.shard = None

    async def _scatter(self, decision: Forward, gather: GatherPlan | None) -> None:
        """Run each part on its shard concurrently, collect, merge, answer once."""
        parts = decision.parts
        self.d.metrics.scatters += 1
        try:
            conns = await asyncio.gather(*(self._conn(s) for s, _ in parts))
        except ServerError as exc:
            self._refuse(exc.sqlstate, f"a shard cannot be reached: {exc.fields.get('M', exc)}")
            return
        self.collecting = set(conns)  # cancel_targets: a CancelRequest reaches them too
        jobs = []
        for conn, (_, stmts) in zip(conns, parts, strict=True):
            sql = gather.sql if gather is not None else stmts[-1]
            jobs.append(self._collect(conn, stmts[:-1], sql))
        try:
            results = await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            self.collecting = set()
        for (shard, _), res in zip(parts, results, strict=True):
            if isinstance(res, BaseException):
                self._shard_failed(shard, res if isinstance(res, ServerError) else ServerError(str(res)))
                return
        for (shard, _), res in zip(parts, results, strict=True):
            self.forward_raw(b"".join(res.other))  # type: ignore[union-attr]
        for (shard, _), res in zip(parts, results, strict=True):
            if res.error is not None:  # type: ignore[union-attr]
                self._shard_error(shard, res.error)  # type: ignore[union-attr]
                self.forward_raw(encode.ready_for_query(self._status()))
                return
        if gather is not None:
            self._answer_gathered(gather, results)  # type: ignore[arg-type]
            return
        out = []
        first_cols = next((r.columns for r in results if r.columns), None)  # type: ignore[union-attr]
        if first_cols:
            out.append(encode.row_description(first_cols))
            for r in results:
                out.extend(encode.data_row(list(v)) for v in r.rows)  # type: ignore[union-attr]
        tags = [r.tags[-1] for r in results if r.tags]  # type: ignore[union-attr]
        if decision.tag is not None:
            tags = [decision.tag]
        if tags:
            out.append(encode.command_complete(merge_command_tags(tags)))
        out.append(encode.ready_for_query(self._status()))
        self.forward_raw(b"".join(out))

    async def _collect(self, conn: ServerConn, held: tuple[str, ...], sql: str) -> Any:
        for h in held:
            res = await collect_query(conn, h)
            if res.error is not None:
                return res
        return await collect_query(conn, sql)

    def _answer_gathered(self, gather: GatherPlan, results: list[Any]) -> None:
        cols_fd = next((r.columns for r in results if r.columns), [])
        columns = [(f.name, f.type_oid) for f in cols_fd]
        rows = [[[None if v is None else v.decode("utf-8") for v in row] for row in r.rows] for r in results]
        merged = merge(gather, columns, rows, c_collation=self.d.c_collation)
        if isinstance(merged, Refuse):
            self._refuse(merged.sqlstate, merged.message)
            return
        assert isinstance(merged, Merged)
        by_name = {f.name: f for f in cols_fd}
        fields = []
        for i, (name, oid) in enumerate(merged.columns):
            f = cols_fd[i] if i < len(cols_fd) and cols_fd[i].name == name else by_name.get(name)
            if f is not None and f.type_oid == oid:
                fields.append(f)
            else:
                fields.append(FieldDescription(name, type_oid=oid))
        out = [encode.row_description(fields)]
        out.extend(encode.data_row([None if v is None else v.encode("utf-8") for v in row]) for row in merged.rows)
        out.append(encode.command_complete(merged.tag))
        out.append(encode.ready_for_query(self._status()))
        self.forward_raw(b"".join(out))

    # -- errors -----------------------------------------------------------------------------------

    def _shard_error(self, shard: str, fields: dict[str, str]) -> None:
        """A shard's ErrorResponse, its message prefixed with the shard's name."""
        self.d.metrics.errors += 1
        f = dict(fields)
        f["M"] = f"shard {shard}: {f.get('M', '')}"
        if self.router.state.open:
            self.router.state = TxnState(open=True, shard=self.router.state.shard, failed=True)
        self.send_error(f)

    def _shard_failed(self, shard: str, exc: ServerError) -> None:
        fields = dict(exc.fields)
        fields["S"] = fields["V"] = "ERROR"
        self._shard_error(shard, fields)
        self.forward_raw(encode.ready_for_query(self._status()))

    def cancel_targets(self) -> list[ServerConn]:
        return [c for c in self.servers.values() if (c.busy or c in self.collecting) and not c.closed]

    # -- a server lost ----------------------------------------------------------------------------

    def on_server_lost(self, conn: ServerConn) -> None:
        try:
            self._server_lost(conn)
        finally:
            if self._fast is conn:  # its error (or FATAL) is out: the session goes on or is closed
                self._fast_done()

    def _server_lost(self, conn: ServerConn) -> None:
        shard = conn.backend
        if self.servers.get(shard) is conn:
            del self.servers[shard]
        was_busy = bool(conn.groups)
        if self.ext_open is conn:
            self.ext_open = None
        self.d.server_lost(conn)
        if self.phase == "closed":
            return
        if self.phase == "login":
            return  # the login task sees the failure itself
        tracker = self.router
        if conn._skip or tracker.state.shard == shard and tracker.state.open:
            self.fatal(CONNECTION_FAILURE, f"server connection to shard {shard} was lost")
            return
        if was_busy and tracker.shard == shard:
            conn.groups.clear()
            self.send_error(error_fields("ERROR", CONNECTION_FAILURE,
                                         f"shard {shard}: server connection was lost; the statement "
                                         "may not have completed"))
            self.forward_raw(encode.ready_for_query(b"I"))
            if tracker.done is not None and not tracker.done.done():
                tracker.done.set_result(None)


def _is_select(sql: str) -> bool:
    head = sql.lstrip().lstrip("(").lstrip()
    while head.startswith("/*"):
        end = head.find("*/")
        head = head[end + 2 :].lstrip() if end >= 0 else ""
    return head[:6].lower() in ("select", "with")
