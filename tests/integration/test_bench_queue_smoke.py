"""`python -m bench queue --smoke` end to end: tierproxy queue, Celery and arq each consume every
job of both workloads on one Redis in one run, and the table, JSON (with the ratios to Celery and
arq) and PNG are written. It checks the harness, never the speed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.benchrun import run_bench_smoke


@pytest.mark.timeout(200)
def test_bench_queue_smoke(tmp_path: Path) -> None:
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("arq") is None:
        pytest.skip("Celery and arq come with the bench extra: pip install -e '.[bench]'")
    out = tmp_path / "out"
    results, report = run_bench_smoke("queue", out, timeout=190)
    assert results["problems"] == [] and results["skipped"] == [], report
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in ("noop", "1 ms") for t in ("tierproxy", "celery", "arq")}, report
    # every run consumed exactly the jobs it enqueued (the counter the jobs INCR on the same Redis)
    assert len(results["runs"]) == 6, report
    for run in results["runs"]:
        assert run["done"] == run["jobs"] == 200 and run["jobs_per_s"] > 0, run
        assert run["worker_cpu_s"] > 0, run
    for row in results["summary"]:
        if row["target"] == "tierproxy":
            assert row["vs_celery"] is not None and row["vs_arq"] is not None, row
    table = (out / "table.txt").read_text()
    assert "vs Celery" in table and "vs arq" in table and "jobs/s" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "queue.png").stat().st_size > 0
