"""`python -m bench dbproxy --smoke` end to end: every target runs every workload without failed
transactions, and the table, JSON and PNG are written. It checks the harness, never the speed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.benchrun import run_bench_smoke


@pytest.mark.timeout(150)
def test_bench_dbproxy_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    results, report = run_bench_smoke("dbproxy", out, timeout=140)
    assert results["problems"] == [] and results["skipped"] == [], report
    # dev.sh installs PgBouncer and pgpool-II, so all four targets run all three workloads
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in ("select-only simple", "select-only extended", "tpcb-like simple")
                    for t in ("tierproxy", "pgbouncer", "pgpool", "direct")}, report  # fmt: skip
    for row in results["summary"]:
        assert row["failed"] == 0 and row["tps"] > 0, row
        if row["target"] != "direct":
            assert row["proxy_cpu_s"] is not None and row["proxy_cpu_s"] > 0, row
    assert "TPS vs PgBouncer" in (out / "table.txt").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "dbproxy.png").stat().st_size > 0


@pytest.mark.timeout(150)
def test_bench_dbproxy_smoke_orm_workload(tmp_path: Path) -> None:
    # `--workloads orm`: bench/ormsql.py's tables are created, and its script (string literals,
    # IN lists, tagging comments, :variables substituted by pgbench) runs through every target.
    out = tmp_path / "out"
    results, report = run_bench_smoke("dbproxy", out, "--workloads", "orm", timeout=140)
    assert results["problems"] == [], report
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {("orm", t) for t in ("tierproxy", "pgbouncer", "pgpool", "direct")}, report
    for row in results["summary"]:
        assert row["failed"] == 0 and row["tps"] > 0, row
