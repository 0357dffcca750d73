"""Pieces of the geodns bench that need no servers: dnsperf's report parsed, the .mmdb it writes for
PowerDNS read back by the maxminddb reader (libmaxminddb's format), the ratios per workload."""

from __future__ import annotations

from pathlib import Path

import maxminddb

from bench.geodns import _summarise, parse_dnsperf
from bench.mmdb import write_country_mmdb

# dnsperf 2.10.0's report (a real run against PowerDNS, -c 4 -q 100 -l 2), with one SERVFAIL added
REPORT = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 25353 -d q.txt -c 4 -q 100 -l 2 -E 8:00011800cb0071
[Status] Sending queries (to 127.0.0.1:25353)
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         121791
  Queries completed:    121790 (100.00%)
  Queries lost:         1 (0.00%)

  Response codes:       NOERROR 121789 (100.00%), SERVFAIL 1 (0.00%)
  Average packet size:  request 52, response 68
  Run time (s):         2.002505
  Queries per second:   60819.323797

  Average Latency (s):  0.001364 (min 0.000026, max 0.013736)
  Latency StdDev (s):   0.000816
"""


def test_dnsperf_report() -> None:
    r = parse_dnsperf(REPORT)
    assert (r["sent"], r["completed"], r["lost"]) == (121791, 121790, 1)
    assert r["rcodes"] == {"NOERROR": 121789, "SERVFAIL": 1}
    assert r["qps"] == 60819.323797 and r["run_time_s"] == 2.002505
    assert abs(r["latency_avg_ms"] - 1.364) < 1e-9 and abs(r["latency_min_ms"] - 0.026) < 1e-9
    assert abs(r["latency_max_ms"] - 13.736) < 1e-9 and abs(r["latency_stddev_ms"] - 0.816) < 1e-9


def test_dnsperf_without_a_report() -> None:
    r = parse_dnsperf("Error: failed to open q.txt\n")
    assert r["qps"] is None and r["completed"] is None and r["rcodes"] == {}


def test_mmdb_read_back(tmp_path: Path) -> None:
    path = tmp_path / "c.mmdb"
    write_country_mmdb(path, {"127.0.0.0/8": "XE", "203.0.113.0/24": "XW", "10.1.2.3/32": "XT"})
    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
        assert (meta.ip_version, meta.record_size, meta.binary_format_major_version) == (4, 24, 2)
        assert reader.get_with_prefix_len("127.200.1.1") == ({"country": {"iso_code": "XE"}}, 8)
        assert reader.get_with_prefix_len("203.0.113.77") == ({"country": {"iso_code": "XW"}}, 24)
        assert reader.get("10.1.2.3") == {"country": {"iso_code": "XT"}}
        assert reader.get("10.1.2.4") is None and reader.get("203.0.112.255") is None
        assert reader.get("8.8.8.8") is None


def test_ratios_are_per_workload_and_round() -> None:
    def run(rnd: int, w: str, t: str, qps: float) -> dict:
        return {"round": rnd, "workload": w, "target": t, "qps": qps, "qps_per_cpu_s": qps / 2,
                "latency_avg_ms": 1.0, "latency_max_ms": 2.0, "latency_stddev_ms": 0.1, "lost": 0,
                "other_rcodes": 0, "server_cpu_s": 2.0, "client_cpu_s": 1.0}  # fmt: skip

    runs = [run(1, "a", "tierproxy", 60), run(1, "a", "dnsmasq", 100), run(1, "a", "powerdns", 120),
            run(2, "a", "tierproxy", 30), run(2, "a", "dnsmasq", 50), run(2, "a", "powerdns", 40),
            run(1, "b", "tierproxy", 10), run(1, "b", "dnsmasq", 100)]  # fmt: skip
    rows = {(r["workload"], r["target"]): r for r in _summarise(runs, ["tierproxy", "dnsmasq", "powerdns"], ["a", "b"])}
    assert rows[("a", "tierproxy")]["vs_dnsmasq"] == 0.6  # 0.6 in both rounds
    assert rows[("a", "tierproxy")]["vs_powerdns"] == (0.5 + 0.75) / 2
    assert rows[("b", "tierproxy")]["vs_dnsmasq"] == 0.1 and rows[("b", "tierproxy")]["vs_powerdns"] is None
    assert ("b", "powerdns") not in rows
