"""`python -m bench geodns --smoke` end to end: dnsperf loads dnsmasq, PowerDNS (GeoIP backend) and,
once `tierproxy geodns` exists, tierproxy, in every workload without lost queries or other rcodes;
the geo servers send an ECS client of 203.0.113.0/24 to the west data center; the table, JSON and
PNG are written. It checks the harness, never the speed."""

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
WORKLOADS = ("one name", "one name + ECS", "N names + ECS")
EAST, WEST = "192.0.2.10", "198.51.100.10"


def _tierproxy_geodns_exists() -> bool:
    """Is `tierproxy geodns` a command of this checkout (then the bench must run it)?"""
    if importlib.util.find_spec("proxy.geodns") is None:
        return False
    from proxy.cli import DAEMONS

    return "geodns" in DAEMONS


@pytest.mark.timeout(150)
def test_bench_geodns_smoke(tmp_path: Path) -> None:
    # scripts/dev.sh installs all three; without them this is not the machine the bench is for
    for name, apt in (("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base"), ("pdns_server", "pdns-server")):
        assert find_binary(name, apt).path is not None, f"{name} missing: run scripts/dev.sh setup"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "geodns", "--smoke", "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=140,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == [], report
    targets = ["dnsmasq", "powerdns"]
    if _tierproxy_geodns_exists():
        targets.insert(0, "tierproxy")
        assert results["skipped"] == [], report
    else:
        assert len(results["skipped"]) == 1 and "tierproxy geodns" in results["skipped"][0], report
    seen = {(row["workload"], row["target"]) for row in results["summary"]}
    assert seen == {(w, t) for w in WORKLOADS for t in targets}, report
    for row in results["summary"]:
        assert row["qps"] > 0 and row["lost"] == 0 and row["other_rcodes"] == 0, row
        assert row["server_cpu_s"] is not None and row["server_cpu_s"] > 0, row
    for run in results["runs"]:
        # dnsperf's own count of answers, each NOERROR
        assert run["completed"] > 0 and run["rcodes"] == {"NOERROR": run["completed"]}, run
    answers = results["answers"]
    for t in targets:
        assert answers[t]["source 127.0.0.1"]["answer"] == [EAST], answers
    # geo servers place the ECS client in the west; dnsmasq has no geo and answers the same
    assert answers["powerdns"]["ECS 203.0.113.0/24"]["answer"] == [WEST], answers
    assert answers["dnsmasq"]["ECS 203.0.113.0/24"]["answer"] == [EAST], answers
    if "tierproxy" in targets:
        assert answers["tierproxy"]["ECS 203.0.113.0/24"]["answer"] == [WEST], answers
    table = (out / "table.txt").read_text()
    assert "QPS vs dnsmasq" in table and "QPS vs PowerDNS" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "geodns.png").stat().st_size > 0


@pytest.mark.timeout(90)
def test_bench_geodns_mmdb_regions(tmp_path: Path) -> None:
    """`--regions mmdb`: tierproxy places clients with the .mmdb the bench writes for PowerDNS."""
    if not _tierproxy_geodns_exists():
        pytest.skip("tierproxy geodns is not in this checkout yet")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "geodns", "--smoke", "--regions", "mmdb", "--targets", "tierproxy",
         "--workloads", "one name + ECS", "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=80,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == [] and results["settings"]["regions"] == "mmdb", report
    assert 'mmdb_regions = { XE = "east", XW = "west" }' in (out / "configs" / "geodns.toml").read_text()
    assert results["answers"]["tierproxy"]["ECS 203.0.113.0/24"]["answer"] == [WEST], results["answers"]
    [row] = results["summary"]
    assert row["qps"] > 0 and row["lost"] == 0 and row["other_rcodes"] == 0, row
