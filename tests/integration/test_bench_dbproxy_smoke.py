"""`python -m bench dbproxy --smoke` end to end: every target runs every workload without failed
transactions, and the table, JSON and PNG are written. It checks the harness, never the speed.

One run covers the three default workloads and `orm` (one cluster, one `pgbench -i`, one start of
each target: the bench's set-up is most of a smoke run's time); that the default set leaves `orm`
out is tests/unit/test_bench_dbproxy_parts.py's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.benchrun import run_bench_smoke

DEFAULT_WORKLOADS = ("select-only simple", "select-only extended", "tpcb-like simple")
TARGETS = ("tierproxy", "pgbouncer", "pgpool", "direct")


@pytest.mark.timeout(150)
def test_bench_dbproxy_smoke_with_the_orm_workload(tmp_path: Path) -> None:
    # `orm`: bench/ormsql.py's tables are created, and its script (string literals, IN lists,
    # tagging comments, :variables substituted by pgbench) runs through every target.
    out = tmp_path / "out"
    results, report = run_bench_smoke("dbproxy", out, "--workloads", ",".join((*DEFAULT_WORKLOADS, "orm")),
                                      timeout=140)  # fmt: skip
    assert results["problems"] == [] and results["skipped"] == [], report
    # dev.sh installs PgBouncer and pgpool-II, so all four targets run all four workloads
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in (*DEFAULT_WORKLOADS, "orm") for t in TARGETS}, report
    for row in results["summary"]:
        assert row["failed"] == 0 and row["tps"] > 0, row
        # PostgreSQL's own CPU per transaction is read for every target (its servers' process trees)
        assert row["postgres_us_per_txn"] is not None and row["postgres_us_per_txn"] > 0, row
        if row["target"] != "direct":
            assert row["proxy_cpu_s"] is not None and row["proxy_cpu_s"] > 0, row
    # the replicas' servers each on a CPU of its own (the default), recorded with the run
    nproc = results["machine"]["nproc"]
    assert results["settings"]["replica_cpus"] == ([[0], [1]] if nproc >= 2 else None), results["settings"]
    assert "TPS vs PgBouncer" in (out / "table.txt").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "dbproxy.png").stat().st_size > 0
