"""DROP DATABASE and ALTER DATABASE ... RENAME through the proxy, despite its own pooled connections.

PostgreSQL refuses to drop or rename a database that other backends are connected to (55006
"database ... is being accessed by other users", after waiting up to 5 s for them to exit). With
session pooling, the proxy itself holds such backends: idle server connections kept after earlier
clients of that database disconnected. So before forwarding one of these statements the proxy
closes its idle pooled connections to that database (every backend: replicas would only lose them
to a recovery conflict), and if the server still answers 55006 (a connection went idle meanwhile),
closes them again and runs the statement once more; the client sees only the final answer.

Only a statement the classifier labelled `DB_ADMIN_DETAILS` is parsed again here (with pglast) to
learn the database's name, so other statements pay one set lookup. The retry runs the batch on the
session's server connection in internal mode (answers collected, not relayed): used for a batch
that is a simple Query, or extended-protocol messages of the unnamed statement ending with Sync,
outside a transaction (where these statements can run at all). Anything else is forwarded as
usual, after the idle connections were closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

from proxy.pgfront.server import ServerConn, ServerError
from proxy.pgfront.session import cstrings
from proxy.pgwire.errors import OBJECT_IN_USE
from proxy.pgwire.messages import decode_backend

from .classify_types import Decision

if TYPE_CHECKING:
    from .session import ClientSession

__all__ = ["DB_ADMIN_DETAILS", "start_if_database_admin", "target_database"]

log = logging.getLogger("tierproxy.dbproxy")

DB_ADMIN_DETAILS = frozenset({"stmt:DropdbStmt", "stmt:RenameStmt"})


def target_database(sql: str) -> str | None:
    """The database that `sql` drops or renames (its old name), else None."""
    try:
        stmts = pglast.parse_sql(sql)
    except (ParseError, ValueError, RecursionError):
        return None
    if len(stmts) != 1:
        return None
    st = stmts[0].stmt
    if isinstance(st, ast.DropdbStmt):
        return st.dbname
    if isinstance(st, ast.RenameStmt) and st.renameType == enums.ObjectType.OBJECT_DATABASE:
        return st.subname
    return None


def _batch_sql(batch: list[tuple[Any, Any]]) -> str | None:
    for msg, aux in batch:
        if msg.type == b"Q":
            (sql,), _ = cstrings(bytes(msg.raw), 5, 1)
            return sql.decode("utf-8", "replace")
        if aux is not None and aux[0] in ("parse", "use", "dup"):
            (_, sql), _ = cstrings(bytes(aux[2]), 5, 2)
            return sql.decode("utf-8", "replace")
    return None


def start_if_database_admin(session: ClientSession, batch: list[tuple[Any, Any]], decision: Decision) -> bool:
    """Called for a batch whose decision has a DB_ADMIN_DETAILS detail: close the idle pooled
    connections to its database and, when the batch allows it, take it over (True: the session
    must not send it itself)."""
    sql = _batch_sql(batch)
    db = target_database(sql) if sql is not None else None
    if db is None:
        return False
    session.d.pools.close_idle_database(db)
    if session.router.in_transaction or batch[-1][0].type not in (b"S", b"Q"):
        return False
    if any(aux is not None and aux[0] in ("parse", "use", "dup") and aux[1] for _, aux in batch):
        return False  # a named statement: the server's bookkeeping stays with the relay
    session._start_async(_run(session, batch, decision, db))
    return True


async def _run(session: ClientSession, batch: list[tuple[Any, Any]], decision: Decision, db: str) -> None:
    route = session._route(decision)
    try:
        conn = await session._attach(route.target)
    except ServerError as exc:
        session._fail_batch(batch, exc)
        return
    if conn.busy or conn.closed:
        session._send(conn, batch)
        return
    data = b"".join(bytes(m.raw) for m, _ in batch)
    syncs = sum(1 for m, _ in batch if m.type in (b"S", b"Q"))
    session.current = conn
    try:
        answers, sqlstate, status = await _exchange(conn, data, syncs)
        if sqlstate == OBJECT_IN_USE:
            log.info("database in use: closing idle pooled connections and retrying", extra={"database": db})
            session.d.pools.close_idle_database(db)
            answers, sqlstate, status = await _exchange(conn, data, syncs)
    except ServerError:
        return  # the connection was lost: on_server_lost has told the client
    conn.prepared.pop("", None)  # the unnamed statement is the client's again (re-parsed if bound)
    if session.phase != "closed":
        session.forward_raw(answers)
        session.router.on_ready_for_query(status, failed=sqlstate is not None)


async def _exchange(conn: ServerConn, data: bytes, syncs: int) -> tuple[bytes, str | None, bytes]:
    """Send `data` and collect the answers up to its `syncs`-th ReadyForQuery: (the answers'
    bytes, the first error's SQLSTATE or None, the last transaction status)."""
    conn._internal = True
    try:
        conn.write(data)
        out: list[bytes] = []
        sqlstate: str | None = None
        status = b"I"
        while syncs:
            msg = await conn._recv()
            if msg.type == b"E" and sqlstate is None:
                sqlstate = decode_backend(msg).fields.get("C", "")
            elif msg.type == b"Z":
                status = bytes(msg.body)
                syncs -= 1
            out.append(bytes(msg.raw))
        conn.status = status
        return b"".join(out), sqlstate, status
    finally:
        conn._internal = False
        if conn._inbox and conn.session is not None:  # raced in after ReadyForQuery: the relay's
            rest = b"".join(bytes(m.raw) for m in conn._inbox)
            conn._inbox.clear()
            conn.session.relay_from_server(conn, rest)
