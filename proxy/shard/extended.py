"""The extended query protocol through the shard router: statements that run on one shard.

Theory of operation
-------------------
The client's Parse/Bind/Describe/Execute/Close messages are held in a batch until Sync (or
Flush). The batch's shard is decided at its Binds: each Bind's statement (the SQL of its Parse)
is planned with the bound parameter values (`key = $1`: the value of $1, decoded from text or
binary format; only the parameters that hold a key are decoded). All the Binds of a batch must
plan to one shard; a batch without a Bind (a Parse and Describe: what a driver's "prepare" sends)
runs on the transaction's shard, else the first shard (whose catalog answers type introspection).
A Sync's batch with statements needing several shards, or Binds needing different shards, is
answered by the router itself outside a transaction (extended_scatter.py: scatter/gather, split
INSERTs, executemany over shards); inside one, txn.py refuses a second shard (0A000). Session
statements (BEGIN, COMMIT, SET, ...) go where the batch's other statements go (else as a batch
without a Bind): the shard's ReadyForQuery then tells the session its transaction state. A SET
sent this way holds on that shard only.

Prepared statements live on shard connections: the session keeps each named statement's Parse
message; before a Bind or Describe of it runs on a shard whose connection does not have it
(or has it with other text), the Parse is sent there first and its ParseComplete dropped (a
`SyncGroup` flag True); a client's Parse of a name the connection still holds from before is
preceded by an injected Close. Transactions stay on one shard (txn.py: BEGIN held until the
first statement names the shard, which is then sent there ahead of the batch).

After a batch is sent with its Sync, the session runs nothing more of the client's until the
shard's ReadyForQuery (so answers never interleave); it stops reading the client when more
arrives meanwhile (`fast_sync`) or at once (`dispatch`'s Task). After a Flush the rest of the group goes
to the same shard, except after a group of only Parse/Describe when no transaction runs on a shard yet (asyncpg's
prepare: Parse, Describe, Flush; then Bind, Execute, Sync): that group is ended on its shard
(`end_open_group`) and the Bind goes to its key's shard, the Parse injected there. Otherwise a
Bind in it that needs another shard is refused and the group skipped to its Sync, which the
shard then answers.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import ServerConn, ServerError, SyncGroup, collect_query, end_open_group, error_fields
from proxy.pgfront.session import cstrings
from proxy.pgwire import encode
from proxy.pgwire.errors import FEATURE_NOT_SUPPORTED, PgProtocolError
from proxy.pgwire.framing import Message

from . import extended_scatter
from .keys import All, One, Param, Refuse, Session, SetKey, Some, decode_param
from .maps import KeyTypeError
from .txn import Forward, Reply, step

if TYPE_CHECKING:
    from .session import ShardSession

__all__ = ["add_message", "dispatch", "end_skipped", "fast_sync"]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


def _parse_info(raw: bytes) -> tuple[str, str, list[int]]:
    """A Parse message's statement name, SQL and parameter type OIDs."""
    (name, sql), pos = cstrings(raw, 5, 2)
    oids: list[int] = []
    if pos + 2 <= len(raw):
        (n,) = _I16.unpack_from(raw, pos)
        pos += 2
        for _ in range(max(n, 0)):
            if pos + 4 > len(raw):
                raise PgProtocolError("invalid Parse message")
            oids.append(struct.unpack_from("!I", raw, pos)[0])
            pos += 4
    return name.decode("utf-8", "replace"), sql.decode("utf-8", "replace"), oids


def _bind_values(raw: bytes) -> tuple[str, list[int], list[bytes | None]]:
    """A Bind message's statement name, parameter format codes and values."""
    (_portal, stmt), pos = cstrings(raw, 5, 2)
    try:
        (nf,) = _I16.unpack_from(raw, pos)
        pos += 2
        fmts = list(struct.unpack_from(f"!{nf}h", raw, pos)) if nf > 0 else []
        pos += 2 * max(nf, 0)
        (nv,) = _I16.unpack_from(raw, pos)
        pos += 2
        values: list[bytes | None] = []
        for _ in range(max(nv, 0)):
            (ln,) = _I32.unpack_from(raw, pos)
            pos += 4
            if ln < 0:
                values.append(None)
            else:
                values.append(raw[pos : pos + ln])
                pos += ln
    except struct.error:
        raise PgProtocolError("invalid Bind message") from None
    return stmt.decode("utf-8", "replace"), fmts, values


def add_message(s: ShardSession, msg: Message) -> None:
    """An extended-protocol message: batch it; Sync and Flush dispatch the batch."""
    t = msg.type
    raw = bytes(msg.raw)
    aux: Any = None
    if t == b"P":
        name, sql, oids = _parse_info(raw)
        s.ext_statements[name] = (raw, sql, oids)
        aux = ("parse", name)
    elif t == b"B":
        # Each Bind and Describe keeps the statement it names as of now: a batch may parse the
        # same name (the unnamed statement) again for its next Bind (psycopg's pipeline).
        stmt, fmts, values = _bind_values(raw)
        aux = ("bind", stmt, fmts, values, s.ext_statements.get(stmt))
    elif t in (b"D", b"C"):
        if len(raw) < 7:
            raise PgProtocolError("invalid Describe/Close message")
        (name_b,), _ = cstrings(raw, 6, 1)
        if raw[5:6] == b"S":
            name = name_b.decode("utf-8", "replace")
            aux = ("describe", name, s.ext_statements.get(name)) if t == b"D" else ("close", name)
            if t == b"C":
                s.ext_statements.pop(name, None)
    elif t == b"F":
        s.ext_batch.append((raw, None))
        _refuse_batch(s, FEATURE_NOT_SUPPORTED, "tierproxy shard does not route FunctionCall")
        s.forward_raw(encode.ready_for_query(s._status()))
        return
    s.ext_batch.append((raw, aux))
    if t == b"S":
        if not fast_sync(s):
            s._start_async(dispatch(s, sync=True))
    elif t == b"H":
        s._start_async(dispatch(s, sync=False))


def _refuse_batch(s: ShardSession, sqlstate: str, message: str) -> None:
    s.ext_batch = []
    s.d.metrics.errors += 1
    s.send_error(error_fields("ERROR", sqlstate, message))


def _plan_bind(s: ShardSession, fmts: list[int], values: list[bytes | None],
               st: tuple[bytes, str, list[int]] | None) -> Any:
    """The plan of a Bind of statement `st` (Parse message, SQL, parameter types)."""
    if st is None:
        return None  # an unknown statement: the shard says so
    _, sql, oids = st
    router = s.d.router
    a = router.analyze(sql)
    params: list[Any] = [None] * len(values)
    spec = router.specs.get(a.group or "") if a.group else (router.groups[0] if len(router.groups) == 1 else None)
    key_type = spec.key_type if spec is not None else "integer"
    for ref in (*a.keys, *a.row_keys):
        if isinstance(ref, Param) and 1 <= ref.number <= len(values):
            i = ref.number - 1
            fmt = fmts[0] if len(fmts) == 1 else fmts[i] if i < len(fmts) else 0
            try:
                params[i] = decode_param(values[i], fmt, oids[i] if i < len(oids) else 0, key_type)
            except KeyTypeError as exc:
                return Refuse("22P02", str(exc))
    return sql, router.plan(sql, params=params, session_key=s.shard_key), params


def fast_sync(s: ShardSession) -> bool:
    """A Sync's batch whose Binds all plan to one statement each on one shard, whose connection
    is attached and idle, with no reshard fence, no group open and nothing held to send first
    (pgbench -M extended, a driver's execute): sent synchronously as the Sync arrives, as
    `ShardSession._fast_query` sends a Query; no Task, gate coroutine or Future per batch (each
    cost a loop iteration, and `_start_async` a pause and resume of the client: system calls).
    The relayed ReadyForQuery ends the wait. False (nothing changed): `dispatch` takes the batch."""
    d = s.d
    if d.reshard.fence is not None or s.ext_open is not None or s.collecting:
        return False
    router = d.router
    state = s.router.state
    shard: str | None = None
    counted: list[tuple[Any, str, Any]] = []
    for _raw, aux in s.ext_batch:
        if aux is None or aux[0] != "bind":
            continue
        planned = _plan_bind(s, aux[2], aux[3], aux[4])
        if planned is None or planned.__class__ is Refuse:
            return False
        sql, plan, params = planned
        if plan.__class__ is not One:
            return False  # several shards, SET tierproxy.shard_key, BEGIN/COMMIT...: dispatch's cases
        state, decision = step(state, plan, router.shards)
        if decision.__class__ is not Forward or decision.tag is not None or len(decision.parts) != 1:
            return False
        target, stmts = decision.parts[0]
        if len(stmts) != 1 or stmts[0] != sql or shard is not None and target != shard:
            return False
        shard = target
        counted.append((plan, sql, params))
    if shard is None:
        return False  # no Bind (a driver's prepare): dispatch chooses the shard
    conn = s.servers.get(shard)
    if conn is None or conn.closed or conn._internal or conn.busy or conn.open_group is not None:
        return False
    tracker = s.router
    if not tracker.state.open:
        s.fence_gen = d.reshard.gen  # as fence.py's gate for an idle session
    tracker.state = state
    for plan, sql, params in counted:
        d.count_plan(plan, sql, params)
    batch, s.ext_batch = s.ext_batch, []
    _send(s, conn, batch, True)
    s.last_shard = shard
    tracker.shard = shard
    tracker.answered = False
    s.fast_wait(conn)
    return True


async def dispatch(s: ShardSession, *, sync: bool) -> None:
    batch, s.ext_batch = s.ext_batch, []
    fenced = await s.d.reshard.gate_batch(s, batch)  # a reshard's fence (fence.py)
    if fenced is not None:
        return await _skip(s, batch, fenced.sqlstate, fenced.message, sync)
    tracker = s.router
    open_conn = s.ext_open
    shard: str | None = open_conn.backend if open_conn is not None and not open_conn.closed else None
    held: tuple[str, ...] = ()
    counted: list[tuple[Any, str, Any]] = []
    bound_shard: str | None = None  # where this batch's earlier Binds go
    # Statements for several shards, or Binds of one Sync for different shards: the router
    # answers the batch itself (extended_scatter.py), outside a transaction and when no group
    # with a Bind is open on a shard.
    can_scatter = sync and not tracker.state.open and not s.ext_open_bound
    for _raw, aux in batch:
        if aux is None or aux[0] != "bind":
            continue
        planned = _plan_bind(s, aux[2], aux[3], aux[4])
        if planned is None:
            continue
        if isinstance(planned, Refuse):
            return await _skip(s, batch, planned.sqlstate, planned.message, sync)
        sql, plan, params = planned
        if can_scatter and (isinstance(plan, Some | All) or isinstance(plan, Refuse) and plan.sqlstate ==
                            FEATURE_NOT_SUPPORTED and s.d.router.analyze(sql).kind == "insert"
                            or isinstance(plan, One) and not plan.any_shard and bound_shard is not None
                            and plan.shard != bound_shard):
            return await _router_answers(s, batch)
        if isinstance(plan, SetKey):
            return await _skip(s, batch, FEATURE_NOT_SUPPORTED, "SET tierproxy.shard_key: send it as a "
                         "simple query", sync)
        if isinstance(plan, Session):
            continue  # BEGIN, COMMIT, SET, ...: where the batch's other statements go (its RFQ tells)
        state, decision = step(tracker.state, plan, s.d.router.shards)
        if isinstance(decision, Refuse):
            tracker.state = state
            return await _skip(s, batch, decision.sqlstate, decision.message, sync)
        if isinstance(decision, Reply) or isinstance(decision, Forward) and (
                len(decision.parts) != 1 or decision.parts[0][1][-1] != sql):
            why = plan.message if isinstance(plan, Refuse) else (
                "a statement for several shards in a group ended by Flush or joined to a Bind "
                "already sent to a shard (send it with a Sync of its own)")
            return await _skip(s, batch, plan.sqlstate if isinstance(plan, Refuse) else FEATURE_NOT_SUPPORTED,
                         why, sync)  # fmt: skip
        assert isinstance(decision, Forward)
        target = decision.parts[0][0]
        if shard is not None and target != shard and open_conn is not None and shard == open_conn.backend \
                and not s.ext_open_bound and tracker.state.shard is None:
            # The open group holds only Parse/Describe (a driver's prepare, then Flush): the
            # client has their answers; end it there and run the rest where the key is.
            try:
                await end_open_group(open_conn)
            except ServerError as exc:
                s._shard_failed(shard, exc)
                return None
            s.ext_open = None
            shard = None
        if shard is not None and target != shard:
            return await _skip(s, batch, FEATURE_NOT_SUPPORTED, f"statements of one Sync need shards "
                         f"{shard} and {target}: send them in separate Syncs", sync)
        shard = bound_shard = target
        tracker.state = state
        held = decision.parts[0][1][:-1]
        counted.append((plan, sql, params))
    for plan, sql, params in counted:
        s.d.count_plan(plan, sql, params)
    if shard is None:
        st = tracker.state
        # No Bind (a driver's prepare: Parse/Describe) describes on the first shard, whose
        # catalog answers the driver's type introspection too (catalog.py): the type OIDs of
        # types created on every shard differ per shard. Session statements' Binds go to the
        # shard used last.
        has_bind = any(aux is not None and aux[0] == "bind" for _, aux in batch)
        shard = st.shard or (s.last_shard if has_bind else None) or s.d.router.shards[0]
    try:
        conn = await s._attach(shard)
    except ServerError as exc:
        s._shard_failed(shard, exc)
        return None
    for h in held:
        try:
            res = await collect_query(conn, h)
        except ServerError as exc:
            if s.phase != "closed":
                s._shard_failed(shard, exc)
            return None
        if res.error is not None:
            return await _skip(s, batch, res.error.get("C", "XX000"), f"shard {shard}: {res.error.get('M', '')}", sync)
    _send(s, conn, batch, sync)
    s.last_shard = shard
    if sync:
        tracker.shard = shard
        tracker.done = asyncio.get_running_loop().create_future()
        try:
            await tracker.done
        finally:
            tracker.done = None
            tracker.shard = None
    return None


async def _router_answers(s: ShardSession, batch: list[tuple[bytes, Any]]) -> None:
    """The batch needs several shards: extended_scatter answers it (after ending a prepare's
    open group, which the client has had the answers of)."""
    conn = s.ext_open
    if conn is not None and not conn.closed:
        try:
            await end_open_group(conn)
        except ServerError as exc:
            s._shard_failed(conn.backend, exc)
            return
    s.ext_open = None
    await extended_scatter.run(s, batch)


async def _skip(s: ShardSession, batch: list[tuple[bytes, Any]], sqlstate: str, message: str, sync: bool) -> None:
    """Refuse the batch: the error, then skip to Sync (or answer it now)."""
    for _raw, aux in batch:
        if aux is not None and aux[0] == "parse":
            s.ext_statements.pop(aux[1], None)  # never parsed anywhere
    s.d.metrics.errors += 1
    s.send_error(error_fields("ERROR", sqlstate, message))
    conn = s.ext_open
    if sync:
        if conn is not None and not conn.closed:
            # The shard has the group's first part: its Sync ends it there; the shard's
            # ReadyForQuery (after its own answers) is relayed.
            await end_skipped(s)
            return
        s.forward_raw(encode.ready_for_query(s._status()))
    else:
        s.skip_until_sync = True  # the session's Sync then ends the group (`end_skipped`)


def _send(s: ShardSession, conn: ServerConn, batch: list[tuple[bytes, Any]], sync: bool) -> None:
    group = conn.open_group or SyncGroup()
    prepared = conn.prepared
    out: list[bytes] = []
    for raw, aux in batch:
        kind = aux[0] if aux is not None else None
        if kind == "parse":
            name = aux[1]
            if name and name in prepared:
                out.append(encode.close(b"S", name))
                group.flags.append(True)
            prepared[name] = raw  # type: ignore[assignment]
            group.names.append(name)
            group.flags.append(name or False)
        elif kind in ("bind", "describe"):
            name = aux[1]
            st = aux[-1]  # the statement as of this message
            if st is not None and prepared.get(name) != st[0]:
                if name and name in prepared:
                    out.append(encode.close(b"S", name))
                    group.flags.append(True)
                out.append(st[0])
                prepared[name] = st[0]  # type: ignore[assignment]
                group.names.append(name)
                group.flags.append(True)
        elif kind == "close":
            prepared.pop(aux[1], None)
            group.flags.append(False)
        elif raw[:1] == b"C":
            group.flags.append(False)  # Close of a portal
        out.append(raw)
    bound = any(raw[:1] in (b"B", b"E") for raw, _ in batch)
    if sync:
        conn.groups.append(group)
        conn.open_group = None
        s.ext_open = None
        s.ext_open_bound = False
    else:
        s.ext_open_bound = bound or (s.ext_open is conn and s.ext_open_bound)
        conn.open_group = group
        s.ext_open = conn
    s.current = conn
    s.d.started(conn)
    conn.write(b"".join(out))
    s.statements_run += 1


async def end_skipped(s: ShardSession) -> None:
    """The client's Sync after a refused part of a group whose start is on a shard: the shard
    ends the group and its ReadyForQuery is relayed."""
    conn = s.ext_open
    if conn is None or conn.closed:
        s.ext_open = None
        s.forward_raw(encode.ready_for_query(s._status()))
        return
    tracker = s.router
    tracker.shard = conn.backend
    tracker.done = asyncio.get_running_loop().create_future()
    _send(s, conn, [(encode.sync(), None)], True)
    try:
        await tracker.done
    finally:
        tracker.done = None
        tracker.shard = None
