"""`python -m bench lb --smoke` end to end: the harness runs, every target serves without errors,
and the table, JSON and (with matplotlib) PNG are written. It checks the harness, never the speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import find_binary

REPO = Path(__file__).resolve().parents[2]
# Two Python proxies always run; nginx and HAProxy only where their Debian packages are installed
# (without nginx the backends are bench.backend and "direct" still runs).
PEERS = {"nginx": "nginx", "haproxy": "haproxy"}


def _expected_targets() -> list[str]:
    targets = ["tierproxy", "tierproxy-asyncio"]
    targets += [name for name, apt in PEERS.items() if find_binary(name, apt).path is not None]
    return targets + ["direct"]


def _bench_lb(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], str]:
    """`python -m bench lb --smoke ARGS --out OUT`, which must exit 0; (process, report)."""
    if find_binary("wrk", "wrk").path is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "lb", "--smoke", *args, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    return proc, report


@pytest.mark.timeout(90)
def test_bench_lb_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, report = _bench_lb(out, timeout=80)

    results = json.loads((out / "results.json").read_text())
    summary = {row["target"]: row for row in results["summary"]}
    expected = _expected_targets()
    assert sorted(summary) == sorted(expected), report
    for name in expected:
        row = summary[name]
        assert row["errors"] == 0, (name, row, results["problems"])
        assert row["requests_per_s"] > 0, (name, row)
        assert row["p50_ms"] is not None and row["p99_ms"] is not None, (name, row)
        if name != "direct":
            assert row["proxy_cpu_s"] is not None and row["proxy_cpu_s"] >= 0, (name, row)
    assert {r["target"] for r in results["rounds"]} == set(expected)
    assert results["machine"]["nproc"] >= 1
    assert "share" in results["note"]
    assert results["problems"] == [], results["problems"]

    table = (out / "table.txt").read_text()
    for name in expected:
        assert name in table
        assert name in proc.stdout
    assert "req/CPU-s" in proc.stdout

    png = out / "lb.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert results["png"] == "lb.png"
    else:
        assert not png.exists() and results["png"] is None


@pytest.mark.timeout(60)
def test_bench_lb_smoke_with_distinct_requests(tmp_path: Path) -> None:
    # --vary: wrk's Lua request() makes every request differ; the run must still be error-free.
    out = tmp_path / "out"
    proc, report = _bench_lb(out, "--vary", "--targets", "tierproxy,direct", timeout=50)
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["vary"] is True and results["settings"]["path"] == "/?r=N"
    summary = {row["target"]: row for row in results["summary"]}
    assert sorted(summary) == ["direct", "tierproxy"], report
    for row in summary.values():
        assert row["errors"] == 0 and row["requests_per_s"] > 0, (row, results["problems"])
    assert "every request distinct" in proc.stdout


@pytest.mark.timeout(90)
def test_bench_lb_smoke_with_realistic_requests(tmp_path: Path) -> None:
    # --realistic: browser-like header sets with Connection: keep-alive from wrk's Lua request(),
    # backends answering files of varying heads and sizes; tierproxy, nginx and HAProxy in one run.
    out = tmp_path / "out"
    proc, report = _bench_lb(out, "--realistic", "--targets", "tierproxy,nginx,haproxy,direct", timeout=80)
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["realistic"] is True and results["settings"]["vary"] is True
    summary = {row["target"]: row for row in results["summary"]}
    expected = sorted(t for t in _expected_targets() if t != "tierproxy-asyncio")
    assert sorted(summary) == expected, report
    for row in summary.values():
        assert row["errors"] == 0 and row["requests_per_s"] > 0, (row, results["problems"])
    assert "realistic client requests" in proc.stdout
    if find_binary("nginx", "nginx").path is not None:
        assert "realistic" in results["backends"]["kind"]
    assert results["problems"] == [], results["problems"]
