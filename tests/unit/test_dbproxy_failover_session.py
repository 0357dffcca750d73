"""proxy/dbproxy/failover_session.py: what a session does when its primary connection is lost
while following Patroni (the decision), and which SETs it replays on the new primary."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.failover_session import LossAction, SessionSets, lone_begin, primary_lost
from proxy.pgwire import encode
from proxy.pgwire.framing import Message

READ = Decision(Target.REPLICA, Reason.READ)
WRITE = Decision(Target.PRIMARY, Reason.WRITE)
COMMIT = Decision(Target.PRIMARY, Reason.TRANSACTION_CONTROL, ends_transaction=True)


def lost(**kw: Any) -> Any:
    args: dict[str, Any] = dict(following=True, busy=False, in_transaction=False, copy=False, pinned=False,
                                movable_state=True, inflight=WRITE, old="10.0.0.1:5432")  # fmt: skip
    args.update(kw)
    return primary_lost(**args)


def test_static_mode_ends_the_session_as_direct() -> None:
    assert lost(following=False).action is LossAction.END
    assert lost(following=False, in_transaction=True, busy=True).action is LossAction.END


def test_idle_between_transactions_moves_silently() -> None:
    loss = lost()
    assert loss.action is LossAction.MOVE and loss.sqlstate is None
    # plain SETs only: the proxy replays them
    assert lost(pinned=True, movable_state=True).action is LossAction.MOVE


def test_state_the_proxy_cannot_rebuild_ends_the_session() -> None:
    assert lost(pinned=True, movable_state=False).action is LossAction.END
    assert lost(copy=True, busy=True).action is LossAction.END


def test_an_open_transaction_gets_40001_on_its_next_batch() -> None:
    loss = lost(in_transaction=True)
    assert (loss.action, loss.sqlstate) == (LossAction.ABORT_LATER, "40001")
    assert "rolled back" in loss.message and "10.0.0.1:5432" in loss.message


def test_a_statement_in_flight_in_a_transaction_gets_40001_now() -> None:
    loss = lost(in_transaction=True, busy=True, inflight=WRITE)
    assert (loss.action, loss.sqlstate) == (LossAction.ERROR_NOW, "40001")


@pytest.mark.parametrize("inflight", [COMMIT, None])
def test_a_commit_in_flight_has_an_unknown_outcome_08007(inflight: Decision | None) -> None:
    loss = lost(in_transaction=True, busy=True, inflight=inflight)
    assert (loss.action, loss.sqlstate) == (LossAction.ERROR_NOW, "08007")
    assert "may or may not have committed" in loss.message


def test_a_lone_begin_in_flight_is_sent_again() -> None:
    begin = Decision(Target.PRIMARY, Reason.TRANSACTION_CONTROL, detail="begin", begins_transaction=True)
    assert lost(in_transaction=True, busy=True, inflight=begin, resendable=True).action is LossAction.RESEND
    # answered in part already (not resendable): the client knows it began
    assert lost(in_transaction=True, busy=True, inflight=begin, resendable=False).sqlstate == "40001"


def test_lone_begin_is_one_begin_query_only() -> None:
    begin = Decision(Target.PRIMARY, Reason.TRANSACTION_CONTROL, detail="begin", begins_transaction=True)
    multi = Decision(Target.PRIMARY, Reason.WRITE, detail="multi-statement", begins_transaction=True)
    assert lone_begin([q("BEGIN", begin)], begin)
    assert not lone_begin([q("BEGIN; INSERT INTO t VALUES (1)", multi)], multi)
    assert not lone_begin([q("BEGIN", begin), q("SELECT 1", READ)], begin)
    assert not lone_begin([q("INSERT INTO t VALUES (1)", WRITE)], WRITE)


def test_a_statement_in_flight_outside_a_transaction_gets_08006() -> None:
    loss = lost(busy=True, inflight=READ)
    assert (loss.action, loss.sqlstate) == (LossAction.ERROR_NOW, "08006")


def q(sql: str, d: Decision) -> tuple[Message, Any]:
    raw = encode.query(sql)
    return Message(b"Q", raw, 5), ("query", d)


SET = Decision(Target.PRIMARY, Reason.SESSION, detail="set", pins_session=True)
TEMP = Decision(Target.PRIMARY, Reason.SESSION, detail="temp-object", pins_session=True)


def test_session_sets_records_plain_sets_in_order() -> None:
    sets = SessionSets()
    sets.note([q("SET search_path = a", SET)], in_transaction=False)
    sets.note([q("select 1", READ)], in_transaction=False)
    sets.note([q("SET application_name = 'x'", SET)], in_transaction=False)
    assert sets.movable and sets.statements == ["SET search_path = a", "SET application_name = 'x'"]


@pytest.mark.parametrize("batch,in_txn", [
    ([q("CREATE TEMP TABLE t (i int)", TEMP)], False),  # a temp table: not rebuilt
    ([q("SET search_path = a", SET)], True),  # inside a transaction: may roll back
])  # fmt: skip
def test_other_pins_make_the_session_not_movable(batch: list[tuple[Message, Any]], in_txn: bool) -> None:
    sets = SessionSets()
    sets.note([q("SET search_path = a", SET)], in_transaction=False)
    sets.note(batch, in_transaction=in_txn)
    assert not sets.movable and sets.statements == []
    sets.note([q("SET search_path = b", SET)], in_transaction=False)
    assert not sets.movable  # for good


def test_resets_after_sets_are_replayed_in_order() -> None:
    reset = Decision(Target.REPLICA, Reason.SESSION, detail="session-reset")
    sets = SessionSets()
    sets.note([q("RESET search_path", reset)], in_transaction=False)  # nothing recorded: nothing to undo
    assert sets.statements == []
    sets.note([q("SET search_path = a", SET)], in_transaction=False)
    sets.note([q("RESET search_path", reset)], in_transaction=False)
    assert sets.movable and sets.statements == ["SET search_path = a", "RESET search_path"]


def test_a_set_through_the_extended_protocol_is_not_replayed() -> None:
    sets = SessionSets()
    raw = encode.parse("", "SET search_path = a")
    sets.note([(Message(b"P", raw, 5), ("parse", "", raw, SET))], in_transaction=False)
    assert not sets.movable
