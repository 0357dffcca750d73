"""The admin console's SHOW commands, decoded with the pgwire codec as a client would."""

from __future__ import annotations

import pytest

from proxy.dbproxy.console import COMMANDS, run_console
from proxy.dbproxy.stats import merge_console
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import (
    CommandComplete,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    RowDescription,
    decode_backend,
)

SNAPSHOT = {
    "pools": [{"backend": "replica1", "user": "app", "database": "shop", "options": {"application_name": "psql"},
               "active": 2, "idle": 3, "clients": 2, "waiting": 0}],
    "servers": [{"backend": "primary", "role": "primary", "user": "app", "database": "shop", "state": "active",
                 "addr": "127.0.0.1", "port": 5432, "pid": 4242, "connect_time": "2026-11-28 10:00:00",
                 "client_addr": "127.0.0.1", "client_port": 50000, "prepared": 3, "tx_status": "T"}],
    "clients": [{"user": "app", "database": "shop", "state": "ready", "addr": "127.0.0.1", "port": 50000,
                 "connect_time": "2026-11-28 10:00:00", "statements": 7, "in_transaction": True,
                 "transaction_backend": "primary", "pinned": False, "last_backend": "primary",
                 "last_reason": "transaction", "servers": ["primary", "replica1"]}],
    "backends": [{"name": "replica1", "role": "replica", "address": "127.0.0.1:5433", "up": True, "usable": False,
                  "lag_bytes": 123, "lag_seconds": 1.5, "replay_lsn": "0/16B3748", "outstanding": 1, "weight": 2}],
    "routes": [["replica1", "read", 10], ["primary", "write", 4]],
    "version": "9.9",
}


def _answer(sql: str) -> list[object]:
    return [decode_backend(m) for m in BackendFramer().feed(run_console(sql, SNAPSHOT))]


def _table(sql: str) -> tuple[list[str], list[list[str | None]]]:
    msgs = _answer(sql)
    assert isinstance(msgs[0], RowDescription) and isinstance(msgs[-1], CommandComplete)
    assert msgs[-1].tag == "SHOW"
    cols = [f.name for f in msgs[0].fields]
    rows = [[None if v is None else v.decode() for v in m.values] for m in msgs[1:-1] if isinstance(m, DataRow)]
    return cols, rows


def test_show_pools_clients_servers_backends_stats():
    cols, rows = _table("SHOW POOLS")
    assert dict(zip(cols, rows[0])) | {} == {
        "database": "shop", "user": "app", "backend": "replica1", "role": "replica", "cl_active": "2",
        "cl_waiting": "0", "sv_active": "2", "sv_idle": "3", "options": "application_name=psql",
    }
    cols, rows = _table("show clients;")
    row = dict(zip(cols, rows[0]))
    assert row["in_transaction"] == "t" and row["servers"] == "primary,replica1" and row["pinned"] == "f"
    cols, rows = _table("  Show Servers ")
    assert dict(zip(cols, rows[0]))["remote_pid"] == "4242"
    cols, rows = _table("SHOW BACKENDS")
    row = dict(zip(cols, rows[0]))
    assert (row["usable"], row["lag_seconds"], row["weight"]) == ("f", "1.500", "2")
    cols, rows = _table("SHOW STATS")
    assert rows == [["primary", "write", "4"], ["replica1", "read", "10"]]
    assert _table("SHOW VERSION")[1] == [["tierproxy dbproxy 9.9"]]
    assert len(_table("SHOW HELP")[1]) == len(COMMANDS)


@pytest.mark.parametrize("sql", ["SHOW NOTHING", "SELECT 1", "DROP TABLE x", "SHOW POOLS; SHOW CLIENTS"])
def test_unknown_commands_are_errors(sql):
    (msg,) = _answer(sql)
    assert isinstance(msg, ErrorResponse) and msg.sqlstate == "42601"


def test_empty_query():
    assert isinstance(_answer("  ; ")[0], EmptyQueryResponse)


def test_merge_console_adds_up_workers_and_takes_the_supervisors_backends():
    other = {
        "pools": [dict(SNAPSHOT["pools"][0], active=1, idle=0, clients=1),
                  dict(SNAPSHOT["pools"][0], backend="primary", active=1, idle=1, clients=1)],
        "servers": [dict(SNAPSHOT["servers"][0], pid=4343)],
        "clients": [dict(SNAPSHOT["clients"][0], port=50001)],
        "backends": [dict(SNAPSHOT["backends"][0], outstanding=2)],
        "routes": [["replica1", "read", 5]],
        "version": "9.9",
    }
    supervisor_rows = [dict(SNAPSHOT["backends"][0], outstanding=0, lag_bytes=7)]
    merged = merge_console([SNAPSHOT, other], supervisor_rows)
    assert [(p["backend"], p["active"], p["idle"], p["clients"]) for p in merged["pools"]] == [
        ("primary", 1, 1, 1), ("replica1", 3, 3, 3)]
    assert [s["pid"] for s in merged["servers"]] == [4242, 4343]
    assert [c["port"] for c in merged["clients"]] == [50000, 50001]
    assert merged["backends"] == [dict(supervisor_rows[0], outstanding=3)]
    assert merged["routes"] == [["primary", "write", 4], ["replica1", "read", 15]]
    # and the console renders the merged snapshot like a single process's
    msgs = [decode_backend(m) for m in BackendFramer().feed(run_console("SHOW STATS", merged))]
    assert [[v.decode() for v in m.values] for m in msgs if isinstance(m, DataRow)] == [
        ["primary", "write", "4"], ["replica1", "read", "15"]]
    assert merge_console([], supervisor_rows)["backends"] == [dict(supervisor_rows[0], outstanding=0)]


def test_sessions_bound_per_replica_are_shown_and_summed_over_workers():
    """balance = "session": SHOW BACKENDS' `sessions`, SHOW CLIENTS' `replica`, the workers' sums
    (SHOW through the supervisor, /status and /metrics' merged snapshot) and the gauge."""
    from proxy.dbproxy.stats import collect, empty, merge

    one = dict(SNAPSHOT, backends=[dict(SNAPSHOT["backends"][0], sessions=3)],
               clients=[dict(SNAPSHOT["clients"][0], replica="replica1")])  # fmt: skip

    def first_row(sql: str) -> dict[str, str]:
        msgs = [decode_backend(m) for m in BackendFramer().feed(run_console(sql, one))]
        desc = next(m for m in msgs if isinstance(m, RowDescription))
        row = next(m for m in msgs if isinstance(m, DataRow))
        return dict(zip([f.name for f in desc.fields], [v.decode() for v in row.values]))

    assert first_row("SHOW BACKENDS")["sessions"] == "3"
    assert first_row("SHOW CLIENTS")["replica"] == "replica1"
    other = dict(one, backends=[dict(SNAPSHOT["backends"][0], sessions=2)])
    supervisor_rows = [dict(SNAPSHOT["backends"][0], sessions=0)]
    assert merge_console([one, other], supervisor_rows)["backends"][0]["sessions"] == 5
    snaps = [dict(empty(), replica_sessions={"replica1": 3, "replica2": 1}),
             dict(empty(), replica_sessions={"replica1": 2})]  # fmt: skip
    merged = merge(snaps)
    assert merged["replica_sessions"] == {"replica1": 5, "replica2": 1}
    rows = [{"name": "primary", "up": True}, {"name": "replica1", "up": True}, {"name": "replica2", "up": True}]
    (gauge,) = [m for m in collect(merged, rows) if m.name == "tierproxy_dbproxy_replica_sessions"]
    assert {s.labels["backend"]: s.value for s in gauge.samples} == {"replica1": 5, "replica2": 1}
