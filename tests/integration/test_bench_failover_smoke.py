"""`python -m bench failover --smoke` end to end: one SIGKILL of the primary's postmaster under
writers through the dbproxy and through HAProxy with Patroni's REST checks; both targets reach
the new primary and the table and JSON are written. It checks the harness, never the speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.devstack.patroni import etcd_binary, patroni_binary
from tests.integration.benchrun import run_bench_smoke


@pytest.mark.skipif(etcd_binary() is None or patroni_binary() is None, reason="patroni and etcd-server are not installed")
@pytest.mark.timeout(300)
def test_bench_failover_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    results, report = run_bench_smoke("failover", out, timeout=280)
    assert results["problems"] == [] and len(results["rounds"]) == 1, report
    (only,) = results["rounds"]
    assert only["old"] != only["new"], only
    assert set(only["targets"]) == {"tierproxy", "haproxy"}, only
    for target, figures in only["targets"].items():
        # Both reached the new primary after the kill; times are reported, not judged.
        assert figures["first_write_s"] is not None and figures["first_write_s"] > 0, (target, figures)
        assert figures["errors"] >= 0 and figures["acked_after_kill"] > 0, (target, figures)
    assert [row["target"] for row in results["summary"]] == ["tierproxy", "haproxy"]
    assert "first write on new primary" in (out / "table.txt").read_text()
