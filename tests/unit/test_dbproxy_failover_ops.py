"""The operator's side of following Patroni, pure parts: the failover history, the switchover
request checks (switchover.py), SHOW CLUSTER and the failover metrics (cluster_view.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from proxy.core.metrics import FuncCollector
from proxy.dbproxy.cluster_view import (
    cluster_rows,
    failover_metrics,
    histogram_json,
    member_rows,
    source_health,
    with_worker_counters,
    worker_counters,
)
from proxy.dbproxy.console import run_console
from proxy.dbproxy.failover_history import FailoverHistory
from proxy.dbproxy.quiesce import busy_primary
from proxy.dbproxy.stats import empty, merge
from proxy.dbproxy.switchover import Plan, Refusal, patroni_answer, plan_switchover
from proxy.dbproxy.topology import parse_cluster
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import DataRow, RowDescription, decode_backend
from tests.unit.patroni_samples import CLUSTER  # a real Patroni 3.0.2 /cluster, sync mode on

TOPOLOGY = parse_cluster(json.dumps(CLUSTER))


# -- the history -----------------------------------------------------------------------------


def test_a_failover_records_from_to_hold_held_and_errors_between_begin_and_finish() -> None:
    h = FailoverHistory()
    assert h.finish("node1", 0.0, held=0, errors=0) is None  # the first confirmation is no failover
    assert h.begin(1000.0, "node1", "Patroni's leader is now node2", held=5, errors=1)
    assert not h.begin(1001.0, None, "lost again", held=7, errors=1)  # the same failover goes on
    record = h.finish("node2", 2.5, held=12, errors=4)
    assert record is not None
    assert record.to_json() == {"at": 1000.0, "when": "1970-01-01T00:16:40Z", "from": "node1", "to": "node2",
                                "reason": "Patroni's leader is now node2", "hold_seconds": 2.5, "held": 7,
                                "errors": 3, "loss_window": None}  # fmt: skip
    assert (h.total, h.held_total, h.errors_total, h.in_progress) == (1, 7, 3, False)
    assert h.hold.count == 1 and h.hold.sum == 2.5


def test_the_history_keeps_the_last_records_and_counts_them_all() -> None:
    h = FailoverHistory(maxlen=3)
    for i in range(5):
        h.begin(float(i), f"n{i}", "r", held=i, errors=0)
        h.finish(f"n{i + 1}", 0.4, held=i + 2, errors=0, loss_window={"loss_window_bytes": i})
    assert [r["from"] for r in h.to_json()] == ["n2", "n3", "n4"]
    assert [r["loss_window"]["loss_window_bytes"] for r in h.to_json()] == [2, 3, 4]
    assert (h.total, h.held_total) == (5, 10)
    assert histogram_json(h.hold)["counts"][2] == 5  # 0.4 s falls in the 0.5 s bucket
    with pytest.raises(ValueError):
        FailoverHistory(maxlen=0)


# -- POST /switchover ------------------------------------------------------------------------


def test_a_switchover_to_a_replica_asks_the_leader_first() -> None:
    plan = plan_switchover(TOPOLOGY, {"candidate": "node2"}, following=True, patroni_urls=["http://10.0.0.9:8008"])
    assert plan == Plan("node1", "node2", None, ("http://127.0.0.1:22007", "http://127.0.0.1:25137",
                                                 "http://127.0.0.1:31705", "http://10.0.0.9:8008"))  # fmt: skip
    assert plan.patroni_body() == {"leader": "node1", "candidate": "node2"}
    plan = plan_switchover(TOPOLOGY, {"candidate": "node3", "scheduled_at": "2030-01-01T00:00:00+00:00"},
                           following=True)  # fmt: skip
    assert isinstance(plan, Plan) and plan.patroni_body()["scheduled_at"] == "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize(("topology", "body", "following", "status", "words"), [
    (TOPOLOGY, {"candidate": "node2"}, False, 409, "does not follow Patroni"),
    (TOPOLOGY, ["node2"], True, 400, "JSON object"),
    (TOPOLOGY, {}, True, 400, "required"),
    (TOPOLOGY, {"candidate": 2}, True, 400, "required"),
    (TOPOLOGY, {"candidate": "node9"}, True, 400, "unknown candidate 'node9'"),
    (TOPOLOGY, {"candidate": "node1"}, True, 400, "already the leader"),
    (TOPOLOGY, {"candidate": "node2", "leader": "node3"}, True, 400, "unknown field(s) leader"),
    (TOPOLOGY, {"candidate": "node2", "scheduled_at": 5}, True, 400, "ISO 8601"),
    (None, {"candidate": "node2"}, True, 503, "no view"),
    (parse_cluster(json.dumps({"members": [dict(CLUSTER["members"][0], state="stopped"), CLUSTER["members"][1]]})),
     {"candidate": "node2"}, True, 503, "no running leader"),
])  # fmt: skip
def test_switchover_requests_refused_with_a_status_and_why(topology, body, following, status, words) -> None:
    refusal = plan_switchover(topology, body, following=following)
    assert isinstance(refusal, Refusal) and refusal.status == status and words in refusal.message


def test_patronis_answer_passes_success_through_and_turns_a_refusal_into_503() -> None:
    plan = Plan("node1", "node2", None, ("http://127.0.0.1:22007",))
    assert patroni_answer(plan, 200, 'Successfully switched over to "node2"') == (200, {
        "leader": "node1", "candidate": "node2", "patroni_status": 200,
        "patroni_message": 'Successfully switched over to "node2"', "result": "switched over"})  # fmt: skip
    status, body = patroni_answer(plan, 412, "candidate name does not match with sync_standby")
    assert status == 503 and body["patroni_status"] == 412
    assert body["error"] == "Patroni refused the switchover (412): candidate name does not match with sync_standby"
    status, body = patroni_answer(Plan("a", "b", "2030-01-01T00:00Z", ()), 202, "Switchover scheduled")
    assert status == 202 and body["result"] == "scheduled" and body["scheduled_at"] == "2030-01-01T00:00Z"


# -- SHOW CLUSTER, source health, metrics ----------------------------------------------------


def _status(history: FailoverHistory) -> dict:
    return {"members": member_rows(TOPOLOGY), "failovers_total": history.total,
            "hold_seconds": histogram_json(history.hold), "held_total": 9, "hold_timeouts": 1, "hold_refused": 2,
            "sessions_cut": 3, "writes_held": False, "held_now": 0,
            "source_health": source_health(0, None, None, 5.0, 6.0)}  # fmt: skip


def test_show_cluster_lists_every_member_with_role_state_address_timeline_lag_sync() -> None:
    msgs = [decode_backend(m) for m in BackendFramer().feed(run_console("SHOW CLUSTER", {"cluster": _status(FailoverHistory())}))]
    assert isinstance(msgs[0], RowDescription)
    assert [f.name for f in msgs[0].fields] == ["name", "role", "state", "address", "timeline", "lag", "sync"]
    rows = [[None if v is None else v.decode() for v in m.values] for m in msgs if isinstance(m, DataRow)]
    assert rows == [
        ["node1", "leader", "running", "127.0.0.1:25509", "3", None, "f"],
        ["node2", "replica", "running", "127.0.0.1:30797", "3", "0", "f"],
        ["node3", "sync_standby", "running", "127.0.0.1:32342", "3", "4096", "t"],
    ]
    assert cluster_rows(None) == []  # a static topology: no rows


def test_source_health_is_bad_only_until_a_good_answer_after_the_error() -> None:
    assert source_health(0, None, None, None, None)["healthy"] is True
    assert source_health(1, "refused", 10.0, 5.0, 9.0)["healthy"] is False
    assert source_health(1, "refused", 10.0, 5.0, 11.0)["healthy"] is True
    assert source_health(1, "refused", 10.0, 12.0, None) == {"healthy": True, "errors": 1, "last_error": "refused",
                                                             "last_error_at": 10.0, "last_ok_at": 12.0}  # fmt: skip


def test_failover_metrics_in_the_exposition_format() -> None:
    history = FailoverHistory()
    history.begin(1.0, "node1", "r", held=0, errors=0)
    history.finish("node2", 1.5, held=9, errors=6)
    registry = CollectorRegistry()
    registry.register(FuncCollector(lambda: failover_metrics(_status(history))))
    text = generate_latest(registry).decode()
    for line in ("tierproxy_dbproxy_failovers_total 1.0", 'tierproxy_dbproxy_failover_hold_seconds_bucket{le="1.0"} 0.0',
                 'tierproxy_dbproxy_failover_hold_seconds_bucket{le="2.0"} 1.0',
                 "tierproxy_dbproxy_failover_hold_seconds_sum 1.5", "tierproxy_dbproxy_held_queries_total 9.0",
                 'tierproxy_dbproxy_failover_errors_total{sqlstate="57P01"} 3.0',
                 'tierproxy_dbproxy_cluster_members{role="sync_standby"} 1.0',
                 "tierproxy_dbproxy_topology_source_healthy 1.0", "tierproxy_dbproxy_writes_held 0.0"):  # fmt: skip
        assert line in text.splitlines(), line
    assert list(failover_metrics(None)) == []


def test_the_workers_hold_counters_are_summed_for_the_supervisor() -> None:
    worker = {"held_now": 1, "held_total": 7, "hold_timeouts": 1, "hold_refused": 0, "sessions_cut": 2,
              "failovers_total": 4, "session_losses": {"move": 3}, "session_errors": {"08006": 1}}  # fmt: skip
    assert worker_counters(worker) == {"held_now": 1, "held_total": 7, "hold_timeouts": 1, "hold_refused": 0,
                                       "sessions_cut": 2, "session_losses": {"move": 3},
                                       "session_errors": {"08006": 1}}  # fmt: skip
    assert worker_counters(None) == {}
    snaps = [empty() | {"failover": worker_counters(worker)}, empty() | {"failover": worker_counters(worker)}, empty()]
    other = dict(worker, session_losses={"move": 1, "end": 1}, session_errors={})
    snaps.append(empty() | {"failover": worker_counters(other)})
    summed = merge(snaps)["failover"]
    assert summed == {"held_now": 3, "held_total": 21, "hold_timeouts": 3, "hold_refused": 0, "sessions_cut": 6,
                      "session_losses": {"move": 7, "end": 1}, "session_errors": {"08006": 2}}  # fmt: skip
    supervisor = {"held_total": 0, "held_now": 0, "failovers_total": 4, "leader": "node1"}
    assert with_worker_counters(supervisor, summed) == supervisor | summed
    assert merge([empty()])["failover"] == {}  # a static topology: nothing to sum


def test_the_drain_waits_for_primary_statements_and_transactions_only() -> None:
    def conn(backend: str, busy: bool = False, status: bytes = b"I", closed: bool = False) -> SimpleNamespace:
        return SimpleNamespace(backend=backend, busy=busy, status=status, closed=closed)

    idle, running, in_txn = conn("primary"), conn("primary", busy=True), conn("primary", status=b"T")
    others = [conn("node2", busy=True), conn("primary", busy=True, closed=True), conn("primary", status=b"E", closed=True)]
    assert busy_primary([idle, running, in_txn, *others]) == [running, in_txn]
    assert busy_primary([idle, *others]) == []
