"""COPY through the shard router: FROM STDIN into a sharded table split by key, TO STDOUT gathered.

Theory of operation
-------------------
`COPY t [(cols)] FROM STDIN [text|csv options]` into a table of a group (simple protocol,
outside a transaction): the router finds the key's position (the column list, else the table's
columns from the first shard's catalog), starts the same COPY on every shard of the router
(their connections read internally, not relayed), and answers the client's CopyInResponse with
the first shard's. Then the client's CopyData go through `copy_split.RowSplitter`: each whole
row goes unchanged to the shard its key maps to (rows of one chunk batched per shard); a header
line goes to every shard (each skips its own first line). At CopyDone each shard gets CopyDone
and the client one CommandComplete with the total (`COPY n`). CopyFail is passed on to every
shard and answered with 57014 as PostgreSQL does.

Bad data the router sees (no key field, a key that is not an integer, a NULL key, an
unterminated CSV quote) gets the protocol's own error (22P04, 22P02, 22004); a shard's error
(a row its table refuses) is sent with the shard's name. Either way every shard gets CopyFail,
and, outside a client transaction, each shard's COPY runs inside a transaction of the router's
(BEGIN first) that is committed on every shard only after every shard has finished its COPY
without error, else rolled back everywhere: no shard keeps part of the data (only a COMMIT
failing on one shard after others committed could, and is reported naming it). The client gets
the error and ReadyForQuery, and the rest of its CopyData is ignored up to its next statement,
as a server ignores it.

`COPY (SELECT ...) TO STDOUT` / `COPY t TO STDOUT` on several shards (no key): each shard's
output is collected and sent as one COPY: the first shard's CopyOutResponse, every shard's rows
(a CSV/text header once), CopyDone, `COPY n` summed. The binary format (each shard's file has
its own header and trailer) and queries whose rows would need merging (ORDER BY, LIMIT,
aggregates, DISTINCT...) are refused with 0A000. COPY of one shard (by key or comment) is relayed
like any statement.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from proxy.pgfront.server import ServerConn, ServerError, collect_answer, collect_query, error_fields
from proxy.pgwire import encode
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import decode_backend

from .copy_split import CopyDataError, CopyOptions, RowSplitter, copy_options
from .gather import GatherPlan, merge_command_tags, plan_gather
from .keys import _convert
from .maps import KeyTypeError

if TYPE_CHECKING:
    from .session import ShardSession

__all__ = ["CopyIn", "copy_from_target", "copy_out", "copy_out_plan", "is_copy_from_stdin", "start_copy_in"]

FEATURE_NOT_SUPPORTED = "0A000"
QUERY_CANCELED = "57014"


def _copy_stmt(sql: str) -> ast.CopyStmt | None:
    head = sql.lstrip()
    while head.startswith("/*"):
        end = head.find("*/")
        head = head[end + 2 :].lstrip() if end >= 0 else ""
    if head[:4].lower() != "copy":
        return None
    try:
        raw = parse_sql(sql)
    except ParseError:
        return None
    if len(raw) != 1 or not isinstance(raw[0].stmt, ast.CopyStmt):
        return None
    return raw[0].stmt


def is_copy_from_stdin(sql: str) -> bool:
    stmt = _copy_stmt(sql)
    return stmt is not None and stmt.is_from and stmt.filename is None and not stmt.is_program


def copy_from_target(s: ShardSession, sql: str) -> tuple[ast.CopyStmt, str] | None:
    """A COPY ... FROM STDIN into a table of a group: the statement and the group's name."""
    stmt = _copy_stmt(sql)
    if stmt is None or not stmt.is_from or stmt.filename is not None or stmt.is_program or stmt.relation is None:
        return None
    router = s.d.router
    a = router.analyze(f"SELECT 1 FROM {RawStream()(stmt.relation)}")
    return (stmt, a.group) if a.group is not None else None


class CopyIn:
    """One COPY FROM STDIN in progress: the shards' connections and the row splitter."""

    def __init__(self, s: ShardSession, conns: dict[str, ServerConn], splitter: RowSplitter | None,
                 group: str | None) -> None:
        self.s = s
        self.conns = conns
        self.splitter = splitter
        self.group = group
        self.header_sent = False
        # Outside a client transaction each shard's COPY runs in a transaction of the router's
        # (BEGIN before it): committed on every shard only when every shard took its rows.
        self.own_txn = False

    def message(self, msg: Message) -> None:
        """A client message while the COPY runs (CopyData, CopyDone, CopyFail, or another)."""
        t = msg.type
        try:
            if t == b"d" and self.splitter is None:  # not split: every row to every shard
                data = encode.copy_data(bytes(msg.body))
                for c in self.conns.values():
                    c.write(data)
            elif t == b"d":
                self._rows(self.splitter.feed(bytes(msg.body)))
                if any(c._inbox or c.closed for c in self.conns.values()):
                    self._end(None, early=True)  # a shard refused a row already
            elif t == b"c":
                if self.splitter is not None:
                    self._rows(self.splitter.finish())
                self._end(None)
            elif t == b"f":
                (text,), _ = _cstring(bytes(msg.body))
                self._end(error_fields("ERROR", QUERY_CANCELED, f"COPY from stdin failed: {text}"))
            elif t in (b"H", b"S"):
                return  # Flush/Sync during copy-in: ignored, as a server does
            else:
                self._end(error_fields("ERROR", "08P01", f"unexpected message type {t.decode('latin-1')!r} "
                                       "during COPY from stdin"))
                self.s.inbox.appendleft(msg)  # then run as usual
        except CopyDataError as exc:
            self._end(error_fields("ERROR", exc.sqlstate, exc.message))
        except KeyTypeError as exc:
            self._end(error_fields("ERROR", "22P02", str(exc)))

    def _rows(self, rows: list[tuple[bytes, bytes | None]]) -> None:
        assert self.splitter is not None and self.group is not None
        if self.splitter.header is not None and not self.header_sent:
            self.header_sent = True
            for c in self.conns.values():
                c.write(encode.copy_data(self.splitter.header))
        if not rows:
            return
        router = self.s.d.router
        m = router.maps[self.group]
        key_type = router.specs[self.group].key_type
        out: dict[str, list[bytes]] = {}
        for row, key in rows:
            if key is None:
                raise CopyDataError("22004", f"row {self.splitter.rows}: the shard key is NULL")
            shard = m.shard_for(_convert(key.decode("utf-8", "replace"), key_type))
            out.setdefault(shard, []).append(row)
        for shard, rs in out.items():
            conn = self.conns.get(shard)
            if conn is None:
                raise CopyDataError(FEATURE_NOT_SUPPORTED, f"shard {shard} is not in the router's shards")
            conn.write(encode.copy_data(b"".join(rs)))

    def _end(self, error: dict[str, str] | None, *, early: bool = False) -> None:
        """Finish on every shard (CopyDone, or CopyFail on any error) and answer the client."""
        s = self.s
        s.copy_in = None
        fail = error is not None or early
        ending = encode.copy_fail(error.get("M", "") if error else "a shard refused the data") if fail \
            else encode.copy_done()
        for c in self.conns.values():
            c.write(ending)
        s._start_async(self._answer(error))

    async def _answer(self, error: dict[str, str] | None) -> None:
        s = self.s
        results = await asyncio.gather(*(_drain(c) for c in self.conns.values()), return_exceptions=True)
        tags: list[str] = []
        shard_error: dict[str, str] | None = None
        if self.own_txn:
            failed = error is not None or any(isinstance(r, BaseException) or r[1] is not None for r in results)
            ends = await asyncio.gather(*(collect_query(c, "ROLLBACK" if failed else "COMMIT")
                                          for c in self.conns.values()), return_exceptions=True)
            for (shard, _), end in zip(self.conns.items(), ends, strict=True):
                if shard_error is None and not failed and (isinstance(end, BaseException) or end.error is not None):
                    fields = dict(end.fields) if isinstance(end, ServerError) else \
                        dict(end.error) if not isinstance(end, BaseException) and end.error else \
                        error_fields("ERROR", "08006", str(end))
                    fields["S"] = fields["V"] = "ERROR"
                    fields["M"] = f"shard {shard}: COMMIT of the COPY failed (the other shards committed): " \
                        f"{fields.get('M', '')}"
                    shard_error = fields
        for (shard, conn), res in zip(self.conns.items(), results, strict=True):
            conn._internal = False
            if isinstance(res, BaseException):
                fields = dict(res.fields) if isinstance(res, ServerError) else error_fields("ERROR", "08006", str(res))
                fields["S"] = fields["V"] = "ERROR"
                res = (None, fields, b"")
            tag, err, other = res
            s.forward_raw(other)
            if err is not None and shard_error is None and not err.get("M", "").startswith("COPY from stdin failed"):
                shard_error = dict(err)
                shard_error["M"] = f"shard {shard}: {shard_error.get('M', '')}"
            if tag is not None:
                tags.append(tag)
        if error is not None or shard_error is not None:
            if s.router.state.open:  # the shard's transaction failed with its COPY
                s.router.state = replace(s.router.state, failed=True)
            s.d.metrics.errors += 1
            s.send_error(error if error is not None else shard_error)  # type: ignore[arg-type]
        else:
            s.forward_raw(encode.command_complete(merge_command_tags(tags) if tags else "COPY 0"))
        s.forward_raw(encode.ready_for_query(s._status()))


def _cstring(body: bytes) -> tuple[list[str], int]:
    end = body.find(b"\0")
    return [body[: end if end >= 0 else len(body)].decode("utf-8", "replace")], end + 1


async def _drain(conn: ServerConn) -> tuple[str | None, dict[str, str] | None, bytes]:
    """Read a shard's answer to the end of its COPY, up to ReadyForQuery."""
    tag = err = None
    other = []
    while True:
        msg = await conn._recv()
        t = msg.type
        if t == b"C":
            tag = decode_backend(msg).tag
        elif t == b"E" and err is None:
            err = decode_backend(msg).fields
        elif t == b"N":
            other.append(bytes(msg.raw))
        elif t == b"Z":
            conn.status = bytes(msg.body)
            return tag, err, b"".join(other)


async def start_copy_in(s: ShardSession, sql: str, stmt: ast.CopyStmt | None, group: str | None,
                        shards: list[str]) -> None:
    """Start the COPY on `shards` and answer CopyInResponse (then `CopyIn.message` runs). With a
    `group`, rows are split by its key; without, every row goes to every one of `shards`."""
    splitter = None
    if group is not None and len(s.d.router.shards) == 1:
        group = None  # one shard: every row goes there, in any format (binary too), unsplit
    if group is not None:
        assert stmt is not None
        opts = copy_options(stmt)
        if isinstance(opts, CopyDataError):
            s._refuse(opts.sqlstate, opts.message)
            return
        if s.router.state.open:
            s._refuse(FEATURE_NOT_SUPPORTED, "COPY FROM STDIN into a sharded table inside a transaction (its "
                      "rows go to several shards; run it outside the transaction)")
            return
        key = s.d.router.specs[group].key
        if stmt.attlist:
            names = [a.sval.lower() for a in stmt.attlist]
        else:
            got = await _columns(s, stmt, shards[0])
            if got is None:
                return
            names = got
        if key not in names:
            s._refuse(FEATURE_NOT_SUPPORTED, f"COPY into a sharded table without its key column {key}")
            return
        splitter = RowSplitter(opts, names.index(key))
    try:
        conns = dict(zip(shards, await asyncio.gather(*(s._attach(sh) for sh in shards)), strict=True))
    except ServerError as exc:
        s._refuse(exc.sqlstate, f"a shard cannot be reached: {exc.fields.get('M', exc)}")
        return
    own_txn = not s.router.state.open
    if own_txn:
        begun = await asyncio.gather(*(collect_query(c, "BEGIN") for c in conns.values()), return_exceptions=True)
        for shard, res in zip(conns, begun, strict=True):
            if isinstance(res, BaseException) or res.error is not None:
                exc = res if isinstance(res, ServerError) else ServerError(str(res), res.error if not isinstance(
                    res, BaseException) else None)
                for c in conns.values():
                    await collect_query(c, "ROLLBACK")
                s._shard_failed(shard, exc)
                return
    for c in conns.values():
        c._internal = True
        c.write(encode.query(sql))
    first: bytes | None = None
    failed: tuple[str, dict[str, str]] | None = None
    for shard, c in conns.items():
        try:
            msg = await _until_copy(c)
        except ServerError as exc:
            failed = failed or (shard, dict(exc.fields, S="ERROR", V="ERROR"))
            continue
        if msg.type == b"G":
            first = first or bytes(msg.raw)
        else:
            failed = failed or (shard, decode_backend(msg).fields)
    if failed is not None or first is None:
        shard, fields = failed or (shards[0], error_fields("ERROR", "XX000", "no CopyInResponse"))
        fields = dict(fields)
        fields["M"] = f"shard {shard}: {fields.get('M', '')}"
        handler = CopyIn(s, conns, None, None)
        handler.own_txn = own_txn
        handler._end(fields)
        return
    if len(shards) > 1:
        s.d.metrics.scatters += 1
    s.copy_in = CopyIn(s, conns, splitter, group)
    s.copy_in.own_txn = own_txn
    s.forward_raw(first)


async def _until_copy(conn: ServerConn) -> Any:
    """The shard's CopyInResponse, or its ErrorResponse (its ReadyForQuery is left to `_drain`)."""
    while True:
        msg = await conn._recv()
        if msg.type in (b"G", b"E"):
            return msg


async def _columns(s: ShardSession, stmt: ast.CopyStmt, shard: str) -> list[str] | None:
    rel = RawStream()(stmt.relation).replace("'", "''")
    try:
        conn = await s._attach(shard)
        res = await collect_query(conn, "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = "
                                  f"'{rel}'::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
    except ServerError as exc:
        s._shard_failed(shard, exc)
        return None
    if res.error is not None:
        s._shard_error(shard, res.error)
        s.forward_raw(encode.ready_for_query(s._status()))
        return None
    return [bytes(r[0] or b"").decode().lower() for r in res.rows]


# --- COPY ... TO STDOUT from several shards --------------------------------------------------------


def copy_out_plan(sql: str) -> tuple[bool] | tuple[str, str] | None:
    """None: not a COPY TO STDOUT. (header,): gather it. (sqlstate, message): refuse."""
    stmt = _copy_stmt(sql)
    if stmt is None or stmt.is_from:
        return None
    opts = copy_options(stmt)
    if isinstance(opts, CopyDataError):
        return (opts.sqlstate, opts.message.replace("COPY FROM STDIN", "COPY TO STDOUT from several shards"))
    if stmt.query is not None:
        g = plan_gather(RawStream()(stmt.query))
        if not isinstance(g, GatherPlan):
            return (g.sqlstate, g.message)
        if g.sort or g.aggregate or g.limit is not None or g.offset is not None:
            return (FEATURE_NOT_SUPPORTED, "COPY (SELECT ...) TO STDOUT from several shards with ORDER BY, LIMIT, "
                    "OFFSET or aggregates (each shard's output is concatenated; use a SELECT, which is merged)")
    return (_header(opts),)


def _header(opts: CopyOptions) -> bool:
    return opts.header


async def copy_out(s: ShardSession, parts: list[tuple[str, str]], header: bool) -> None:
    """Run each shard's COPY TO STDOUT and send their rows as one COPY."""
    try:
        conns = await asyncio.gather(*(s._attach(sh) for sh, _ in parts))
    except ServerError as exc:
        s._refuse(exc.sqlstate, f"a shard cannot be reached: {exc.fields.get('M', exc)}")
        return
    s.collecting = set(conns)
    try:
        results = await asyncio.gather(*(collect_answer(c, encode.query(sql)) for c, (_, sql) in
                                         zip(conns, parts, strict=True)), return_exceptions=True)
    finally:
        s.collecting = set()
    for (shard, _), res in zip(parts, results, strict=True):
        if isinstance(res, BaseException):
            s._shard_failed(shard, res if isinstance(res, ServerError) else ServerError(str(res)))
            return
    for (shard, _), res in zip(parts, results, strict=True):
        if res.error is not None:
            s._shard_error(shard, res.error)
            s.forward_raw(encode.ready_for_query(s._status()))
            return
    out = [b"".join(m for r in results for m in r.other)]
    start = next((r.copy_out for r in results if r.copy_out), None)
    if start is not None:
        out.append(start)
        for i, r in enumerate(results):
            data = r.copy_data[1:] if header and i > 0 else r.copy_data
            out.extend(data)
        out.append(encode.copy_done())
    tags = [r.tags[-1] for r in results if r.tags]
    if tags:
        out.append(encode.command_complete(merge_command_tags(tags)))
    out.append(encode.ready_for_query(s._status()))
    s.forward_raw(b"".join(out))

