"""Transactions stay on one shard: a session's transaction state and what to do with each plan.

Theory of operation
-------------------
`step(state, plan, all_shards)` is pure: it takes the session's `TxnState` and the plan of its
next statement (from keys.plan) and returns the new state and a decision: `Forward` (which
statements to send to which shards, in order), `Reply` (the router answers the command tag
itself), or `Refuse`; `SetKey` and non-transaction `Session` plans pass through unchanged for
the session layer.

* BEGIN is held, not sent: which shard the transaction runs on is only known from its first
  statement that needs a shard. BEGIN (and SAVEPOINTs before that statement) are then sent to
  that shard ahead of it, and every later statement must need that same shard.
* A statement that needs another shard, or several, is refused (0A000, naming both shards) and
  the transaction is failed, as PostgreSQL fails a transaction after an error: later statements
  get 25P02 until ROLLBACK (or ROLLBACK TO SAVEPOINT); a COMMIT of a failed transaction sends
  ROLLBACK to the shard and answers ROLLBACK, as PostgreSQL does. So no transaction ever commits
  part of its work on one shard while another part was refused.
* Outside a transaction a statement for several shards runs on each as its own implicit
  transaction: such a write (an INSERT split over shards, a scattered UPDATE) is not atomic
  across shards, and a failure on one shard leaves the others' rows committed.
* A statement naming no table (``SELECT now()``, FETCH from a cursor) runs on the transaction's
  shard; as the transaction's first statement it chooses the first shard (or, with the session's
  ``SET tierproxy.shard_key``, that key's shard, as keys.plan routes it there).
* COMMIT PREPARED / ROLLBACK PREPARED name no shard: they need ``/* tierproxy:shard=NAME */``
  (with it, keys.plan gives `One` and they are forwarded like any statement), unless only one
  shard is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .keys import TRANSACTION_KINDS, All, One, Plan, Refuse, Session, SetKey, Some

__all__ = ["Forward", "Reply", "TxnState", "step"]

FEATURE_NOT_SUPPORTED = "0A000"
IN_FAILED_TRANSACTION = "25P02"
NO_ACTIVE_TRANSACTION = "25P01"

_TAGS = {"begin": "BEGIN", "start": "START TRANSACTION", "commit": "COMMIT", "rollback": "ROLLBACK",
         "savepoint": "SAVEPOINT", "release": "RELEASE", "rollback_to": "ROLLBACK"}


@dataclass(frozen=True)
class TxnState:
    open: bool = False  # inside BEGIN ... COMMIT/ROLLBACK
    shard: str | None = None  # the shard it runs on, once a statement chose one
    pending: tuple[str, ...] = ()  # BEGIN and SAVEPOINTs held until the shard is known
    failed: bool = False  # a refused statement aborted it


@dataclass(frozen=True)
class Forward:
    parts: tuple[tuple[str, tuple[str, ...]], ...]  # (shard, statements to send, in order)
    tag: str | None = None  # answer with this tag instead of the server's (COMMIT -> ROLLBACK)


@dataclass(frozen=True)
class Reply:
    tag: str  # CommandComplete tag the router answers itself


Decision = Forward | Reply | Refuse | SetKey | Session

_CLOSED = TxnState()


def _shards_of(plan: One | Some | All, all_shards: Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(plan, One):
        return [(plan.shard, plan.sql)]
    if isinstance(plan, Some):
        return list(plan.parts)
    return [(s, plan.sql) for s in all_shards]


def step(state: TxnState, plan: Plan, all_shards: Sequence[str]) -> tuple[TxnState, Decision]:
    """The session's next state and what to do with `plan`."""
    if isinstance(plan, Session) and plan.kind in TRANSACTION_KINDS:
        return _transaction_statement(state, plan, all_shards)
    if state.failed:
        return state, Refuse(IN_FAILED_TRANSACTION, "current transaction is aborted, commands "
                                                    "ignored until end of transaction block")
    if isinstance(plan, Refuse):
        return (replace(state, failed=True) if state.open else state), plan
    if isinstance(plan, SetKey | Session):
        return state, plan
    if isinstance(plan, One) and plan.any_shard and state.shard is not None:
        plan = One(state.shard, plan.sql, plan.reason)  # a statement naming no table follows
    parts = _shards_of(plan, all_shards)
    if not state.open:
        return state, Forward(tuple((shard, (sql,)) for shard, sql in parts))
    shards = list(dict.fromkeys(shard for shard, _ in parts))
    if len(shards) != 1:
        names = ", ".join(shards)
        on = f"runs on shard {state.shard}" if state.shard else "has not chosen a shard yet"
        return replace(state, failed=True), Refuse(
            FEATURE_NOT_SUPPORTED,
            f"a transaction stays on one shard: this statement needs shards {names} (the "
            f"transaction {on}); the transaction is aborted")
    shard, sql = parts[0]
    if state.shard is None:
        return replace(state, shard=shard, pending=()), Forward(((shard, state.pending + (sql,)),))
    if shard != state.shard:
        return replace(state, failed=True), Refuse(
            FEATURE_NOT_SUPPORTED,
            f"a transaction stays on one shard: it runs on shard {state.shard} and this statement "
            f"needs shard {shard}; the transaction is aborted")
    return state, Forward(((shard, (sql,)),))


def _transaction_statement(state: TxnState, plan: Session,
                           all_shards: Sequence[str] = ()) -> tuple[TxnState, Decision]:
    kind = plan.kind
    sql = _statement_text(plan)
    if kind in ("begin", "start"):
        if state.open:
            if state.shard is not None:
                return state, Forward(((state.shard, (sql,)),))
            return state, Reply(_TAGS[kind])
        return TxnState(open=True, pending=(sql,)), Reply(_TAGS[kind])
    if kind in ("commit", "rollback", "prepare_transaction"):
        if not state.open:
            return _CLOSED, Reply(_TAGS.get(kind, "ROLLBACK"))
        if state.shard is None:
            if kind == "prepare_transaction" and not state.failed:
                return _CLOSED, Refuse(FEATURE_NOT_SUPPORTED, "PREPARE TRANSACTION before any "
                                       "statement chose the transaction's shard")
            return _CLOSED, Reply("ROLLBACK" if state.failed or kind != "commit" else "COMMIT")
        if state.failed:
            return _CLOSED, Forward(((state.shard, ("ROLLBACK",)),), tag="ROLLBACK")
        return _CLOSED, Forward(((state.shard, (sql,)),))
    if kind in ("commit_prepared", "rollback_prepared"):
        if len(all_shards) == 1:  # with one shard, there is no doubt where it was prepared
            return state, Forward(((all_shards[0], (sql,)),))
        return state, Refuse(FEATURE_NOT_SUPPORTED,
                             f"{kind.replace('_', ' ').upper()} names no shard: send it with "
                             "/* tierproxy:shard=NAME */")
    # savepoint, release, rollback_to
    if not state.open:
        name = {"savepoint": "SAVEPOINT", "release": "RELEASE SAVEPOINT",
                "rollback_to": "ROLLBACK TO SAVEPOINT"}[kind]
        return state, Refuse(NO_ACTIVE_TRANSACTION, f"{name} can only be used in transaction blocks")
    if state.failed and kind != "rollback_to":
        return state, Refuse(IN_FAILED_TRANSACTION, "current transaction is aborted, commands "
                                                    "ignored until end of transaction block")
    if state.shard is None:
        return replace(state, pending=state.pending + (sql,), failed=False), Reply(_TAGS[kind])
    return replace(state, failed=False), Forward(((state.shard, (sql,)),))


def _statement_text(plan: Session) -> str:
    return plan.sql if plan.sql else plan.kind.upper()
