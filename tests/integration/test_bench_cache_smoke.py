"""`python -m bench cache --smoke` end to end: cache on, cache off and PgBouncer run the read-heavy
script with both protocols without failed transactions; the cache-on runs report a hit ratio (the
proxy's own counters) and the table its TPS ratios. It checks the harness, never the speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.benchrun import run_bench_smoke


@pytest.mark.timeout(150)
def test_bench_cache_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    results, report = run_bench_smoke("cache", out, timeout=140)
    assert results["problems"] == [] and results["skipped"] == [], report
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in ("read-heavy simple", "read-heavy extended")
                    for t in ("cache-on", "cache-off", "pgbouncer")}, report  # fmt: skip
    for row in results["summary"]:
        assert row["failed"] == 0 and row["tps"] > 0, row
        if row["target"] == "cache-on":
            # 95 % reads of 1,000 hot accounts over ~1 s: many repeat, so some are hits.
            assert row["hit_ratio"] is not None and 0 < row["hit_ratio"] <= 1, row
            assert row["vs_cache-off"] is not None and row["vs_pgbouncer"] is not None, row
        else:
            assert row["hit_ratio"] is None, row
    table = (out / "table.txt").read_text()
    assert "hit ratio" in table and "TPS vs cache off" in table and "TPS vs PgBouncer" in table
