"""`python -m bench shard --smoke` end to end: the router, PgBouncer and direct run every workload
(pgbench custom scripts keyed by a random user id) in one run without failed transactions, and the
table, JSON and PNG are written with each proxy's overhead over direct. It checks the harness,
never the speed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.benchrun import run_bench_smoke


@pytest.mark.timeout(150)
def test_bench_shard_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    results, report = run_bench_smoke("shard", out, timeout=140)
    assert results["problems"] == [] and results["skipped"] == [], report
    # dev.sh installs PgBouncer, so all three targets run all three workloads, in one run
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in ("read by key simple", "read by key extended", "write by key simple")
                    for t in ("tierproxy", "pgbouncer", "direct")}, report  # fmt: skip
    assert "\\set uid random(1, :n)" in results["scripts"]["read"]
    assert "WHERE user_id = :uid" in results["scripts"]["read"] and "UPDATE users" in results["scripts"]["write"]
    for row in results["summary"]:
        assert row["failed"] == 0 and row["tps"] > 0, row
        # each target's overhead over direct sits beside the others': a TPS ratio and added latency
        assert row["vs_direct"] is not None and row["added_latency_ms"] is not None, row
        if row["target"] != "direct":
            assert row["proxy_cpu_s"] is not None and row["proxy_cpu_s"] > 0, row
    # the runs really went through each target: every (round, workload, target) has its own run
    assert len(results["runs"]) == 9 and all(r["processed"] > 0 for r in results["runs"]), report
    table = (out / "table.txt").read_text()
    assert "TPS vs direct" in table and "added lat ms" in table and "TPS vs PgBouncer" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "shard.png").stat().st_size > 0
