"""`python -m bench cdn --smoke` end to end: the origin and every cache start, each cache answers
a stored object as a hit, wrk loads each without errors, the eviction table has every policy,
and the table and JSON are written. It checks the harness, never the speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import find_binary

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_bench_cdn_smoke(tmp_path: Path) -> None:
    for name, apt in (("wrk", "wrk"), ("nginx", "nginx")):
        if find_binary(name, apt).path is None:
            pytest.skip(f"{name} is not installed (apt-get install {apt})")
    expected = ["tierproxy", "nginx", "direct"]
    if find_binary("varnishd", "varnish").path is not None:
        expected.insert(1, "varnish")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench", "cdn", "--smoke", "--objects", "20", "--out", str(out)],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=110,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == [], report
    assert results["hits_checked"] == {name: True for name in expected}, report
    summary = {row["target"]: row for row in results["summary"]}
    assert sorted(summary) == sorted(expected), report
    for name in expected:
        assert summary[name]["errors"] == 0 and summary[name]["requests_per_s"] > 0, (name, summary[name])
        if name != "direct":
            assert summary[name]["proxy_cpu_s"] is not None, (name, summary[name])
    # The cdn answered the load from its store: no misses beyond the fill (20 objects and the
    # readiness probe's GET /).
    status = results["tierproxy_status"]
    assert status["misses"] == 21 and status["hits"] >= summary["tierproxy"]["runs"], status
    policies = {row["policy"]: row for row in results["eviction"]["policies"]}
    assert sorted(policies) == ["fifo", "lfu", "lru", "wtinylfu"]
    assert all(0 < row["hit_ratio"] < 1 for row in policies.values()), policies
    table = (out / "table.txt").read_text()
    for name in [*expected, "wtinylfu", "req/CPU-s vs Varnish"]:
        assert name in table and name in proc.stdout
