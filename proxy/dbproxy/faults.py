"""Servers that stop answering: a replica the monitor marks down, a statement past timeouts.query.

A replica that hangs (SIGSTOP, a stuck disk, a network black hole) keeps its TCP connections
open, so nothing tells the sessions waiting on it that no answer will come. Two things do:

* The monitor (monitor.py) marks the replica down after a poll fails or exceeds
  `monitor.timeout`. `replica_marked_down` then aborts every server connection of the proxy to
  that replica (and asks the server, by CancelRequest, to stop what they ran, for when it comes
  back), and connections still being opened to it give up. Each session sees its connection lost
  (session.py `on_server_lost`): a read that has had no answer yet, outside a transaction
  (`conn.replay`), runs again on another replica or the primary and the client sees only latency;
  one with part of its answer forwarded fails at once with ERROR 08006 and the session goes on;
  inside a transaction the session ends (FATAL), its state being gone. The primary is never
  treated so: its statements are writes that cannot be re-run, and a slow monitor poll on a busy
  primary must not abort them; `timeouts.query` covers it.
* `timeouts.query` is the proxy's own: when a statement has run that long, the proxy sends the
  server a CancelRequest (`query_timed_out`); a server that answers it ends the statement with its
  own 57014 (the clock is per statement: a ReadyForQuery with more statements in flight restarts
  it). If the server has said nothing `timeouts.query_cancel_grace` seconds later,
  `cancel_unanswered` gives up on the server: the connection is aborted and the client gets
  57014 "canceling statement due to statement timeout" (an ERROR and the session goes on, for a
  replica outside a transaction; FATAL for the client's own primary connection or inside a
  transaction, whose state went with the connection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.pgfront.server import ServerConn, error_fields
from proxy.pgwire.errors import CONNECTION_FAILURE, QUERY_CANCELED

from .router import PRIMARY

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["cancel_unanswered", "query_timed_out", "replica_marked_down", "restart_query_timer"]

log = logging.getLogger("tierproxy.dbproxy")


def replica_marked_down(daemon: DbProxyDaemon, backend: str) -> int:
    """Abort the proxy's in-use connections to a replica the monitor marked down; how many."""
    if backend == PRIMARY:
        return 0
    daemon.pools.abandon_connects(backend)  # logins hanging on it: fail over now
    conns = [c for c in daemon.pools.active if c.backend == backend and not c.closed]
    for conn in conns:
        if conn.busy and conn.pid:
            daemon.cancel_conn(conn)  # for when it wakes up: stop the statement nobody awaits
        if conn.fatal is None:  # what a client that cannot be spared an error is told
            conn.fatal = error_fields("FATAL", CONNECTION_FAILURE, f"server {backend} stopped answering (the "
                                      "monitor marked it down), so the proxy closed its connection")  # fmt: skip
        conn.abort()  # connection_lost -> the session's on_server_lost: re-run or fail at once
    if conns:
        log.warning("backend down: aborted its connections", extra={"backend": backend, "connections": len(conns)})
    return len(conns)


def query_timed_out(daemon: DbProxyDaemon, conn: ServerConn) -> None:
    """`timeouts.query` passed with `conn` busy: cancel, and give up if the cancel is not heard."""
    conn.timer = None
    if not conn.busy or conn.closed:
        return
    log.info("query timeout: cancelling", extra={"backend": conn.backend})
    daemon.cancel_conn(conn)
    grace = daemon.cfg.timeouts.query_cancel_grace
    conn.timer = asyncio.get_running_loop().call_later(grace, cancel_unanswered, daemon, conn, conn.received)


def restart_query_timer(daemon: DbProxyDaemon, conn: ServerConn) -> None:
    """A statement ended (ReadyForQuery) with more in flight behind it (a pipelining client): the
    next one gets the whole of `timeouts.query`, and a cancel already sent was heard."""
    if conn.timer is not None:
        conn.timer.cancel()
    conn.timer = asyncio.get_running_loop().call_later(daemon.cfg.timeouts.query, query_timed_out, daemon, conn)


def cancel_unanswered(daemon: DbProxyDaemon, conn: ServerConn, received: int) -> None:
    """Grace over after a cancel: a server that said nothing since (`received` bytes then) is
    given up (connection dropped, the client told 57014); one still talking (a pipelining
    client's later statements, rows of a cancelled query) is alive: its clock starts again."""
    conn.timer = None
    if not conn.busy or conn.closed:
        return
    if conn.received != received:
        conn.timer = asyncio.get_running_loop().call_later(daemon.cfg.timeouts.query, query_timed_out, daemon, conn)
        return
    grace = daemon.cfg.timeouts.query_cancel_grace
    log.warning("query timeout: the server did not answer the cancel; dropping the connection",
                extra={"backend": conn.backend, "grace": grace})  # fmt: skip
    conn.replay = None  # not to be run again elsewhere: it would time out again
    severity = "FATAL" if conn.backend == PRIMARY else "ERROR"
    conn.fatal = error_fields(severity, QUERY_CANCELED,
                              "canceling statement due to statement timeout (timeouts.query); the server did "
                              f"not answer the cancel request within {grace:g} s, so its connection was closed")  # fmt: skip
    conn.abort()
