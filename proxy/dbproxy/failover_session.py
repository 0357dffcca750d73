"""A client session across a failover (`[topology] source = "patroni"`): what happens to it when
its primary server connection is lost, and how it goes on on the new primary.

In static mode the client's primary connection is its identity (docs/dbproxy.md, Identity): when
it goes, the session ends with the server's FATAL, as direct. Following Patroni, a primary that
goes away is a failover or a switchover, and the session survives it where its state allows:

- `primary_lost(...)` is the decision, pure (unit-tested): from what the session was doing when the
  connection went, one `Loss` (an action and, for the client, a SQLSTATE and a message).
  - idle between transactions (nothing in flight, no transaction open): MOVE. Nothing is said to
    the client; its next statement that needs the primary waits at the write gate (failover.py)
    and runs on the confirmed new primary. Named prepared statements are re-created there as on
    any server the session has not used (session.py); session settings made with plain `SET`
    (the only state the proxy keeps: `SessionSets`) are replayed first.
  - a transaction open, nothing in flight: ABORT_LATER. The transaction is gone (it was on the
    dead primary: not committed); the client's next batch gets `ERROR 40001` (serialization_failure:
    the code retry loops recognise, "retry the transaction") and ReadyForQuery idle; then the
    session goes on.
  - a lone `BEGIN` in flight, nothing of its answer forwarded yet: RESEND. Nothing ran in that
    transaction, so the BEGIN is sent again, to the new primary (held like any write); the client
    sees only a slower BEGIN. (asyncpg cannot use a connection for transactions again after its
    `BEGIN` failed: a 40001 there would cost it more than a retry.)
  - a statement in flight inside a transaction: ERROR_NOW `40001`, or `08007`
    (transaction_resolution_unknown) when the batch in flight could commit it (a COMMIT, or one the
    proxy did not classify): its outcome is unknown, as with a direct connection, and a blind retry
    could commit twice.
  - a statement in flight outside a transaction: ERROR_NOW `08006` ("may not have completed": an
    autocommit write may or may not have committed), as for a replica lost mid-statement.
  - COPY in progress, session state the proxy cannot rebuild (temp tables, LISTEN, WITH HOLD
    cursors, SQL PREPARE, advisory locks, SET inside a transaction...), or not following Patroni:
    END, the session ends with the server's FATAL (57P01/08006), as today.
- `SessionSets` records a session's plain `SET` statements (simple protocol, outside a
  transaction) so that a moved session gets them again; anything else that pins a session marks it
  not movable.
- `move_primary(session, conn, loss)` applies a Loss to a ClientSession; `answer_aborted(session,
  batch)` answers the batch after an ABORT_LATER. `replay_sets(session, conn)` runs the recorded
  SETs on the session's new primary connection before its first batch there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import ServerConn, ServerError, error_fields
from proxy.pgwire import encode
from proxy.pgwire.errors import CONNECTION_FAILURE

if TYPE_CHECKING:
    from proxy.pgwire.framing import Message

    from .classify_types import Decision
    from .session import ClientSession

__all__ = [
    "Loss",
    "LossAction",
    "SERIALIZATION_FAILURE",
    "SessionSets",
    "TRANSACTION_RESOLUTION_UNKNOWN",
    "answer_aborted",
    "move_primary",
    "primary_lost",
    "replay_sets",
]

log = logging.getLogger("tierproxy.dbproxy")

SERIALIZATION_FAILURE = "40001"  # the open transaction was rolled back: retry it
TRANSACTION_RESOLUTION_UNKNOWN = "08007"  # a commit was in flight: it may or may not have happened
MAX_SETS = 100  # SET statements remembered per session; more: the session is not movable


class LossAction(Enum):
    END = "end"  # FATAL, the session ends (as direct)
    MOVE = "move"  # silent: the next statement runs on the new primary
    ABORT_LATER = "abort-later"  # the next batch gets the error, then the session goes on
    ERROR_NOW = "error-now"  # the statement in flight gets the error, then the session goes on
    RESEND = "resend"  # a lone BEGIN in flight, unanswered: sent again to the new primary


@dataclass(frozen=True, slots=True)
class Loss:
    action: LossAction
    sqlstate: str | None = None
    message: str = ""


def primary_lost(
    *,
    following: bool,
    busy: bool,
    in_transaction: bool,
    copy: bool,
    pinned: bool,
    movable_state: bool,
    inflight: Decision | None,
    resendable: bool = False,
    old: str,
) -> Loss:
    """What a session does when its primary server connection is lost (see the module docstring).
    `busy`: a statement was in flight; `pinned`: the session has state on that connection, which
    `movable_state` says the proxy can rebuild (plain SETs only); `inflight`: the decision of the
    batch in flight, None when the proxy does not know it (pipelined behind another);
    `resendable`: that batch is a lone BEGIN of which the client got nothing yet; `old`: the lost
    server, for the message."""
    if not following or copy:
        return Loss(LossAction.END)
    if pinned and not movable_state:
        return Loss(LossAction.END)
    if not busy and not in_transaction:
        return Loss(LossAction.MOVE)
    if busy and in_transaction and resendable and inflight is not None and inflight.begins_transaction:
        return Loss(LossAction.RESEND)
    gone = f"the primary {old} is no longer reachable or no longer the Patroni leader (failover)"
    if in_transaction:
        if busy and (inflight is None or inflight.ends_transaction):
            return Loss(LossAction.ERROR_NOW, TRANSACTION_RESOLUTION_UNKNOWN,
                        f"{gone} while the transaction was committing: it may or may not have "
                        "committed; check before retrying")  # fmt: skip
        action = LossAction.ERROR_NOW if busy else LossAction.ABORT_LATER
        return Loss(action, SERIALIZATION_FAILURE,
                    f"{gone}: the transaction was rolled back; retry it (the session goes on)")  # fmt: skip
    return Loss(LossAction.ERROR_NOW, CONNECTION_FAILURE, f"{gone}; the statement may not have completed")


class SessionSets:
    """The plain `SET name = value` statements a session ran (simple protocol, outside a
    transaction), in order, to replay on a new primary, with the `RESET` / `DISCARD` / `SET ...
    TO DEFAULT` statements that came after them (replayed in the same order, the new server
    ends in the same state); `movable` turns False for good at the first other statement that
    pins the session."""

    __slots__ = ("movable", "statements")

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.movable = True

    def note(self, batch: list[tuple[Message, Any]], in_transaction: bool) -> None:
        """Called for each batch with a statement that pins the session, or that resets session
        state once SETs were recorded."""
        if not self.movable:
            return
        for msg, aux in batch:
            if aux is None or aux[0] not in ("query", "parse", "use", "dup"):
                continue
            d = aux[1] if aux[0] == "query" else aux[3]
            if not d.pins_session and not (d.detail == "session-reset" and self.statements):
                continue
            plain = d.detail == "set" or d.detail == "session-reset"
            if aux[0] != "query" or not plain or in_transaction or len(self.statements) >= MAX_SETS:
                self.movable = False
                self.statements.clear()
                return
            self.statements.append(bytes(msg.raw[5:-1]).decode("utf-8", "replace"))


def lone_begin(batch: list[tuple[Message, Any]], decision: Decision | None) -> bool:
    """`batch` is one BEGIN / START TRANSACTION and nothing else: safe to send again."""
    return (decision is not None and decision.begins_transaction and decision.detail.startswith("begin")
            and len(batch) == 1 and batch[0][0].type == b"Q")  # fmt: skip


def move_primary(session: ClientSession, conn: ServerConn, loss: Loss) -> None:
    """Apply a non-END `loss` for the lost primary connection `conn` (already out of
    `session.servers`)."""
    resend = conn.replay
    pending = len(conn.groups)
    half_sent = conn.open_group is not None
    conn.groups.clear()
    conn.open_group = None
    if session.current is conn:
        session.current = None
    session.moved += 1
    follower = session.d.follower
    if follower is not None:
        follower.session_losses[loss.action.value] = follower.session_losses.get(loss.action.value, 0) + 1
        if loss.sqlstate is not None:
            follower.session_errors[loss.sqlstate] = follower.session_errors.get(loss.sqlstate, 0) + 1
    if loss.action is LossAction.MOVE:
        log.info("session moved off the old primary", extra={"user": session.user, "peer": session.peer})
        return
    if loss.action is LossAction.RESEND:
        assert resend is not None
        conn.replay = None
        session.router.on_ready_for_query(b"I")  # the BEGIN never ran: no transaction yet
        session._start_async(session._route_async(resend, session._decision(resend), None))
        return
    assert loss.sqlstate is not None
    fields = error_fields("ERROR", loss.sqlstate, loss.message)
    if loss.action is LossAction.ABORT_LATER:
        session.aborted = fields  # answer_aborted: the next batch
        return
    session.send_error(fields)
    if half_sent:
        session.skip_until_sync = True
    session.router.on_ready_for_query(b"I", failed=True)
    if pending:
        session.forward_raw(encode.ready_for_query(b"I") * pending)


def answer_aborted(session: ClientSession, batch: list[tuple[Message, Any]]) -> None:
    """The client's first batch after its transaction was lost: the error instead of running it."""
    fields, session.aborted = session.aborted, None
    assert fields is not None
    for _, aux in batch:
        if aux is not None and aux[0] == "parse":
            session.statements.pop(aux[1], None)  # never ran: the client does not have it
    session._fail_batch(batch, ServerError("transaction lost", fields))


async def replay_sets(session: ClientSession, conn: ServerConn) -> None:
    """The session's SETs, on its new primary connection, before anything of the client's."""
    for sql in session.sets.statements:
        await conn.simple_query(sql)
