"""Extended-protocol batches the router answers itself: statements for several shards.

Theory of operation
-------------------
extended.py sends a Sync's batch to the one shard its Binds need. When a Bind needs several
shards (no key: scatter; `IN ($1, $2)` or `= ANY(...)` over keys of several shards; a multi-row
INSERT whose rows belong to several shards) or the Binds of one Sync need different shards
(asyncpg's executemany over keys of several shards), outside a transaction, the batch comes here
and the router plays the server's part for it, message by message:

* Parse: ParseComplete (the statement is kept by the session, as for every Parse; a shard gets
  it when a later batch runs there). Close: CloseComplete. Flush: nothing.
* Describe of a statement: the first shard describes it (a Parse of the unnamed statement,
  Describe, Sync there) and its ParameterDescription and RowDescription are relayed.
* Bind: planned with its bound values (keys.py, txn.py; gather.plan_gather for a SELECT);
  BindComplete. Each shard of the plan runs its statement as Parse/Bind/Describe/Execute/Sync of
  the unnamed statement on its connection, concurrently, answers collected whole at Describe or
  Execute of the portal:
  - a SELECT whose rows must be merged (ORDER BY, aggregates): the shards are asked for text
    results, gather.merge merges them, and each value is sent in the format the client asked
    for that column (binvalues.to_binary for binary: a type it cannot write is refused with
    0A000 naming it, never sent wrong). The RowDescription (at Describe of the portal) is the
    merged one, with the client's formats;
  - other SELECTs (concatenated, LIMIT/OFFSET applied) and writes (tags summed, RETURNING rows
    concatenated): the shards are asked for the client's formats and the rows pass unchanged;
  - a multi-row INSERT split over shards: each shard's part keeps its rows' parameters,
    renumbered from $1, with their values and formats (bindmsg.py).
* Execute: the portal's rows (up to its row limit, then PortalSuspended; the next Execute
  continues), CommandComplete.
* Sync: ReadyForQuery.

An error (the router's refusal or a shard's, named) skips the rest to the Sync, as on a server.
Each statement runs on each shard in its own implicit transaction: a batch that writes to
several shards is not atomic (as for the simple protocol outside a transaction); inside a
transaction a statement for another shard is refused by txn.py before it gets here.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pglast.stream import RawStream

from proxy.pgfront.server import ServerError, collect_answer, error_fields
from proxy.pgwire import encode
from proxy.pgwire.errors import FEATURE_NOT_SUPPORTED

from .binvalues import Unencodable, to_binary
from .bindmsg import Bind, parse_bind, parse_execute, renumber_params
from .gather import GatherPlan, Merged, merge, merge_command_tags, plan_gather, window
from .keys import All, Refuse, Session, SetKey, Some
from .txn import Forward, step

if TYPE_CHECKING:
    from .session import ShardSession

__all__ = ["run"]

UNDEFINED_STATEMENT = "26000"
UNDEFINED_PORTAL = "34000"


@dataclass
class _Portal:
    sql: str  # the client's statement
    oids: list[int]
    bind: Bind
    parts: list[tuple[str, str, Bind, list[int]]]  # (shard, its statement, its Bind, its param types)
    gather: GatherPlan | None
    params: list[Any]  # decoded values, for LIMIT $n
    described: bytes | None = None  # RowDescription or NoData for the client
    rows: list[bytes] = field(default_factory=list)  # DataRow messages not yet sent
    tag: str | None = None
    notices: bytes = b""
    done: bool = False


class _Failed(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", ""))
        self.fields = fields


def _refused(sqlstate: str, message: str) -> _Failed:
    return _Failed(error_fields("ERROR", sqlstate, message))


def _is_select(sql: str) -> bool:
    from .session import _is_select as is_select

    return is_select(sql)


async def run(s: ShardSession, batch: list[tuple[bytes, Any]]) -> None:
    """Answer `batch` (the client's messages up to and including a Sync) as a server would."""
    portals: dict[str, _Portal] = {}
    failed = False
    for raw, aux in batch:
        t = raw[:1]
        if t == b"S":
            break
        if failed:
            continue
        try:
            if t == b"P":
                s.forward_raw(encode.parse_complete())
            elif t == b"B":
                bind = parse_bind(raw)
                portals[bind.portal] = _plan(s, bind, aux[4])
                s.forward_raw(encode.bind_complete())
            elif t == b"D":
                if raw[5:6] == b"S":
                    await _describe_statement(s, aux[1], aux[2])
                else:
                    p = _portal(portals, raw[6:-1].decode("utf-8", "replace"))
                    await _run_portal(s, p)
                    s.forward_raw(p.notices + (p.described or encode.no_data()))
                    p.notices = b""
            elif t == b"E":
                ex = parse_execute(raw)
                p = _portal(portals, ex.portal)
                await _run_portal(s, p)
                _send_rows(s, p, ex.max_rows)
            elif t == b"C":
                if raw[5:6] == b"P":
                    portals.pop(raw[6:-1].decode("utf-8", "replace"), None)
                s.forward_raw(encode.close_complete())
            # Flush: everything is written as it is answered
        except _Failed as exc:
            s.d.metrics.errors += 1
            s.send_error(exc.fields)
            failed = True
    s.forward_raw(encode.ready_for_query(s._status()))


def _portal(portals: dict[str, _Portal], name: str) -> _Portal:
    p = portals.get(name)
    if p is None:
        raise _refused(UNDEFINED_PORTAL, f'portal "{name}" does not exist')
    return p


def _plan(s: ShardSession, bind: Bind, st: tuple[bytes, str, list[int]] | None) -> _Portal:
    from .extended import _plan_bind

    if st is None:
        raise _refused(UNDEFINED_STATEMENT, f'prepared statement "{bind.statement}" does not exist')
    _, sql, oids = st
    planned = _plan_bind(s, list(bind.param_formats), list(bind.values), st)
    assert planned is not None
    if isinstance(planned, Refuse):
        raise _refused(planned.sqlstate, planned.message)
    sql, plan, params = planned
    split = _split_insert(s, sql, oids, bind, params) if isinstance(plan, Refuse) else None
    if split is not None:
        s.d.count_plan(Some(tuple((sh, q) for sh, q, _, _ in split), "split INSERT"), sql, params)
        return _Portal(sql, oids, bind, split, None, params)
    if isinstance(plan, SetKey | Session):
        raise _refused(FEATURE_NOT_SUPPORTED, "a session or transaction statement in the same Sync as "
                       "statements for several shards (send it in a Sync of its own)")
    tracker = s.router
    tracker.state, decision = step(tracker.state, plan, s.d.router.shards)
    if isinstance(decision, Refuse):
        raise _refused(decision.sqlstate, decision.message)
    if not isinstance(decision, Forward):
        raise _refused(FEATURE_NOT_SUPPORTED, "a transaction statement in the same Sync as statements for "
                       "several shards (send it in a Sync of its own)")
    gather = None
    if isinstance(plan, Some | All) and len(decision.parts) > 1:
        g = plan_gather(sql)
        if isinstance(g, GatherPlan):
            gather = g
        elif _is_select(sql):
            raise _refused(g.sqlstate, g.message)
    s.d.count_plan(plan, sql, params)
    parts = [(shard, gather.sql if gather is not None else stmts[-1], bind, oids) for shard, stmts in decision.parts]
    return _Portal(sql, oids, bind, parts, gather, _limit_params(bind))


def _split_insert(s: ShardSession, sql: str, oids: list[int], bind: Bind,
                  params: list[Any]) -> list[tuple[str, str, Bind, list[int]]] | None:
    """A multi-row INSERT with parameters whose rows belong to several shards: each shard's
    INSERT with its rows, parameters renumbered, and its Bind."""
    router = s.d.router
    a = router.analyze(sql)
    if a.kind != "insert" or a.group is None or a._stmt is None:
        return None
    m = router.maps[a.group]
    rows: dict[str, list[int]] = {}
    for i, ref in enumerate(a.row_keys):
        key = params[ref.number - 1] if hasattr(ref, "number") else ref
        if key is None:
            return None  # keys.plan said why (NULL key)
        rows.setdefault(m.shard_for(key), []).append(i)
    if len(rows) < 2:
        return None
    order = {sh: i for i, sh in enumerate(m.shards)}
    parts = []
    for shard in sorted(rows, key=lambda sh: order.get(sh, len(order))):
        stmt = copy.deepcopy(a._stmt)
        stmt.selectStmt.valuesLists = tuple(stmt.selectStmt.valuesLists[i] for i in rows[shard])
        stmt, numbers = renumber_params(stmt)
        types = [oids[n - 1] if n - 1 < len(oids) else 0 for n in numbers]
        parts.append((shard, RawStream()(stmt), bind.subset(numbers), types))
    return parts


def _limit_params(bind: Bind) -> list[Any]:
    """The bound values as gather.merge reads LIMIT $n / OFFSET $n: integers or text."""
    out: list[Any] = []
    for i, v in enumerate(bind.values):
        if v is None:
            out.append(None)
        elif bind.param_format(i) == 0:
            out.append(v.decode("utf-8", "replace"))
        elif len(v) in (2, 4, 8):
            out.append(int.from_bytes(v, "big", signed=True))
        else:
            out.append(None)
    return out


async def _describe_statement(s: ShardSession, name: str, st: tuple[bytes, str, list[int]] | None) -> None:
    if st is None:
        raise _refused(UNDEFINED_STATEMENT, f'prepared statement "{name}" does not exist')
    _, sql, oids = st
    shard = s.router.state.shard or s.d.router.shards[0]  # as a prepare's Describe (extended.py)
    res = (await _collect(s, [(shard, encode.parse("", sql, oids) + encode.describe(b"S", "") + encode.sync())]))[0]
    s.forward_raw(b"".join(res.other) + b"".join(res.described))


async def _collect(s: ShardSession, jobs: list[tuple[str, bytes]]) -> list[Any]:
    """Run each payload on its shard concurrently; the answers, or _Failed naming the shard."""
    try:
        conns = await asyncio.gather(*(s._attach(shard) for shard, _ in jobs))
    except ServerError as exc:
        fields = dict(exc.fields)
        fields["S"] = fields["V"] = "ERROR"
        fields["M"] = f"a shard cannot be reached: {fields.get('M', exc)}"
        raise _Failed(fields) from None
    s.collecting = set(conns)  # a CancelRequest reaches them
    try:
        results = await asyncio.gather(*(collect_answer(c, payload, extended=True)
                                         for c, (_, payload) in zip(conns, jobs, strict=True)),
                                       return_exceptions=True)
    finally:
        s.collecting = set()
        for c in conns:
            c.prepared.pop("", None)  # the unnamed statement there is ours now
    for (shard, _), res in zip(jobs, results, strict=True):
        if isinstance(res, BaseException):
            fields = dict(res.fields) if isinstance(res, ServerError) else error_fields("ERROR", "08006", str(res))
            fields["S"] = fields["V"] = "ERROR"
            fields["M"] = f"shard {shard}: {fields.get('M', '')}"
            raise _Failed(fields)
    for (shard, _), res in zip(jobs, results, strict=True):
        if res.error is not None:
            fields = dict(res.error)
            fields["M"] = f"shard {shard}: {fields.get('M', '')}"
            raise _Failed(fields)
    return results


async def _run_portal(s: ShardSession, p: _Portal) -> None:
    if p.done:
        return
    g = p.gather
    text = g is not None and bool(g.sort or g.aggregate or g.hidden)
    jobs = []
    for shard, sql, bind, oids in p.parts:
        payload = (encode.parse("", sql, oids) + bind.encode(result_formats=[0] if text else None)
                   + encode.describe(b"P", "") + encode.execute("", 0) + encode.sync())
        jobs.append((shard, payload))
    results = await _collect(s, jobs)
    p.done = True
    p.notices = b"".join(m for r in results for m in r.other)
    first = next((r for r in results if r.columns), None)
    if text:
        assert g is not None
        _merge_text(s, p, g, results)
        return
    if first is None:
        p.described = encode.no_data()
    else:
        p.described = next(d for d in first.described if d[:1] == b"T")
    rows = [encode.data_row(list(v)) for r in results for v in r.rows]
    if g is not None:
        win = window(g, p.params)
        if isinstance(win, Refuse):
            raise _refused(win.sqlstate, win.message)
        offset, limit = win
        rows = rows[offset:] if limit is None else rows[offset : offset + limit]
        p.tag = f"SELECT {len(rows)}"
    else:
        tags = [r.tags[-1] for r in results if r.tags]
        p.tag = merge_command_tags(tags) if tags else None
    p.rows = rows


def _merge_text(s: ShardSession, p: _Portal, g: GatherPlan, results: list[Any]) -> None:
    cols_fd = next((r.columns for r in results if r.columns), [])
    columns = [(f.name, f.type_oid) for f in cols_fd]
    rows = [[[None if v is None else v.decode("utf-8") for v in row] for row in r.rows] for r in results]
    merged = merge(g, columns, rows, params=p.params, c_collation=s.d.c_collation)
    if isinstance(merged, Refuse):
        raise _refused(merged.sqlstate, merged.message)
    assert isinstance(merged, Merged)
    by_name = {f.name: f for f in cols_fd}
    fields = []
    formats = []
    for i, (name, oid) in enumerate(merged.columns):
        f = cols_fd[i] if i < len(cols_fd) and cols_fd[i].name == name else by_name.get(name)
        fmt = p.bind.result_format(i)
        formats.append(fmt)
        if f is None or f.type_oid != oid:
            f = replace(cols_fd[i], type_oid=oid, type_size=-1, type_modifier=-1) if i < len(cols_fd) else None
        fields.append(replace(f, format=fmt) if f is not None else None)
    if len(p.bind.result_formats) > 1 and len(p.bind.result_formats) != len(merged.columns):
        raise _refused("08P01", f"bind message has {len(p.bind.result_formats)} result formats but query has "
                       f"{len(merged.columns)} columns")
    out = []
    for row in merged.rows:
        values: list[bytes | None] = []
        for i, v in enumerate(row):
            if v is None:
                values.append(None)
            elif formats[i] == 1:
                try:
                    values.append(to_binary(merged.columns[i][1], v))
                except Unencodable as exc:
                    raise _refused(FEATURE_NOT_SUPPORTED, f"cannot send merged column {merged.columns[i][0]} "
                                   f"in binary format: {exc}") from None
            else:
                values.append(v.encode("utf-8"))
        out.append(encode.data_row(values))
    p.described = encode.row_description(fields)  # type: ignore[arg-type]
    p.rows = out
    p.tag = merged.tag


def _send_rows(s: ShardSession, p: _Portal, max_rows: int) -> None:
    out = [p.notices]
    p.notices = b""
    if max_rows > 0 and len(p.rows) > max_rows:
        out.extend(p.rows[:max_rows])
        p.rows = p.rows[max_rows:]
        out.append(encode.portal_suspended())
    else:
        out.extend(p.rows)
        p.rows = []
        if p.tag is not None:
            out.append(encode.command_complete(p.tag))
        else:
            out.append(encode.empty_query_response())
    s.forward_raw(b"".join(out))
