"""`python -m bench lb --tls --smoke` and `--h2 --smoke` end to end: tierproxy, nginx and HAProxy
each terminate TLS with the bench's certificate and serve wrk over https and h2load over h2
without errors; the report has the plain bench's columns and ratios. The harness, never the speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import find_binary
from bench.tlspeers import parse_h2load
from tests.integration.benchrun import run_bench_smoke


def _targets() -> list[str]:
    return ["tierproxy"] + [p for p in ("nginx", "haproxy") if find_binary(p, p).path is not None]


def _bench(out: Path, *args: str) -> tuple[dict, str]:
    targets = _targets()
    results, report = run_bench_smoke("lb", out, *args, "--targets", ",".join(targets), timeout=100)
    summary = {row["target"]: row for row in results["summary"]}
    assert sorted(summary) == sorted(targets), report
    for name, row in summary.items():
        assert row["errors"] == 0 and row["requests_per_s"] > 0, (name, row, results["problems"])
        assert row["proxy_cpu_s"] is not None and row["req_per_cpu_s"] > 0, (name, row)
    assert results["problems"] == [], results["problems"]
    for t in results["targets"].values():
        assert t["url"].startswith("https://127.0.0.1:")
    if "nginx" in summary:
        assert summary["nginx"]["rps_vs_nginx"] == 1.0
        assert summary["tierproxy"]["rps_vs_nginx"] > 0 and summary["tierproxy"]["cpu_eff_vs_nginx"] > 0
        conf = (out / "configs" / "nginx-nginx.conf").read_text()
        assert " ssl" in conf and "http2" in conf and "ssl_certificate " in conf
    if "haproxy" in summary:
        assert "alpn h2,http/1.1" in (out / "configs" / "haproxy.cfg").read_text()
    assert "[listeners.tls]" in (out / "configs" / "tierproxy.toml").read_text()
    assert "req/s vs nginx" in (out / "table.txt").read_text()
    return results, report


@pytest.mark.timeout(120)
def test_bench_lb_tls_smoke(tmp_path: Path) -> None:
    if find_binary("wrk", "wrk").path is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    results, stdout = _bench(tmp_path / "out", "--tls")
    assert results["settings"]["protocol"] == "https" and results["benchmark"] == "lb-https"
    assert "over https" in stdout
    for run in results["rounds"]:
        assert run["p50_ms"] is not None and run["p99_ms"] is not None


@pytest.mark.timeout(120)
def test_bench_lb_h2_smoke(tmp_path: Path) -> None:
    if find_binary("h2load", "nghttp2-client").path is None:
        pytest.skip("h2load is not installed (apt-get install nghttp2-client)")
    results, _ = _bench(tmp_path / "out", "--h2")
    assert results["settings"]["protocol"] == "h2" and results["settings"]["client"] == "h2load"
    for run in results["rounds"]:
        # h2load's own word that ALPN chose h2 and TLS was on, for every peer
        assert "Application protocol: h2" in run["text"] and "TLS Protocol: TLSv1.3" in run["text"], run["text"]
        assert run["requests"] > 0 and run["mean_ms"] is not None


def test_parse_h2load_counts_failures_and_bad_statuses() -> None:
    text = """finished in 2.00s, 150.50 req/s, 10KB/s
requests: 320 total, 330 started, 301 done, 290 succeeded, 11 failed, 4 errored, 2 timeout
status codes: 280 2xx, 10 3xx, 6 4xx, 5 5xx
                     min         max         mean         sd        +/- sd
time for request:     1.50ms    250.00ms     12.25ms      3.00ms    90.00%
"""
    r = parse_h2load(text)
    assert (r.requests, r.requests_per_s, r.duration_s) == (301, 150.5, 2.0)
    assert r.non_2xx_3xx == 11 and r.socket_errors == {"connect": 0, "read": 4, "write": 0, "timeout": 2, "failed": 5}
    assert r.errors == 22 and r.mean_ms == 12.25 and r.max_ms == 250.0 and r.p99_ms is None
    with pytest.raises(ValueError):
        parse_h2load("h2load: connection refused")
