"""deploy/prometheus/ and deploy/grafana/: promtool checks the scrape config and the alert rules and
runs their unit tests; the dashboards are what scripts/grafana_dashboards.py writes and their
expressions parse (promtool); and every metric a rule or a dashboard names is one the daemons
really export (a live /metrics of each: tests/integration/livemetrics.py), with the labels its
matchers and `by (...)` use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.livemetrics import Exported, start_all

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "rules" / "tierproxy.yml"
RULE_TESTS = PROM / "tests" / "tierproxy_test.yml"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
DAEMONS = ("lb", "dbproxy", "shard", "geodns", "cdn", "queue")
# name{matchers}: the labels a selector names (matchers may hold commas inside quotes: none of ours do)
_SELECTOR = re.compile(r"\b(tierproxy_[a-z0-9_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/dev.sh setup installs it)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=PROM)


def test_promtool_checks_the_scrape_config_and_its_rule_files() -> None:
    run = _promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0 and "SUCCESS: 1 rule files found" in run.stdout, run.stdout + run.stderr


def test_promtool_checks_the_rules() -> None:
    run = _promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    run = _promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_every_alert_has_a_firing_case_and_the_issue_topics_are_covered() -> None:
    names = {a["alert"] for a in _alerts()}
    fired = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert names == fired
    exprs = " ".join(a["expr"] for a in _alerts())
    # issue 22: backend down, replica lag, failovers, error ratio, shard skew, queue age, cache hit ratio, SERVFAIL
    for metric in ("tierproxy_lb_backend_up", "tierproxy_dbproxy_backend_up", "tierproxy_dbproxy_replica_lag_seconds",
                   "tierproxy_dbproxy_failovers_total", "tierproxy_lb_requests_total", "tierproxy_shard_skew_ratio",
                   "tierproxy_queue_oldest_age_seconds", "tierproxy_cdn_hits_total",
                   'tierproxy_geodns_responses_total{rcode="SERVFAIL"}'):
        assert metric in exprs, metric


@pytest.fixture(scope="module")
def exported(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    cleanup: list[Any] = []
    try:
        yield start_all(tmp_path_factory.mktemp("livemetrics"), pg_cluster, cleanup)
    finally:
        for stop in reversed(cleanup):
            stop()


def unknown_names(exprs: list[str], exported: Exported) -> list[str]:
    """`name` or `name{label=...}` in each expression that no daemon exports (or a label it lacks)."""
    bad = []
    for expr in exprs:
        for name, matchers in _SELECTOR.findall(expr):
            if name not in exported.names:
                bad.append(name)
                continue
            seen = exported.names[name]
            for label in _MATCHER.findall(matchers or ""):
                if seen and label not in seen and label != "instance":  # labels are known only from samples
                    bad.append(f"{name}{{{label}}}")
        labels = set().union(*(exported.names.get(n, set()) for n, _ in _SELECTOR.findall(expr)))
        for group in _BY.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                if labels and label not in labels | {"le", "job", "instance"}:
                    bad.append(f"by ({label})")
    return bad


def test_every_metric_in_the_rules_is_exported_by_a_live_daemon(exported: Exported) -> None:
    for daemon in DAEMONS:
        assert len(exported.by_daemon[daemon]) >= 5, (daemon, exported.by_daemon.get(daemon))
    assert unknown_names([a["expr"] for a in _alerts()], exported) == []
    # and the check itself catches a name no daemon has
    assert unknown_names(["rate(tierproxy_lb_request_total[5m])", 'tierproxy_lb_backend_up{zone="x"}'],
                         exported) == ["tierproxy_lb_request_total", "tierproxy_lb_backend_up{zone}"]


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for path in DASHBOARDS for p in json.loads(path.read_text())["panels"] for t in p["targets"]]


def test_dashboards_one_per_daemon_plus_overview_as_generated() -> None:
    assert {p.name for p in DASHBOARDS} == {f"tierproxy-{d}.json" for d in (*DAEMONS, "overview")}
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "grafana_dashboards.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    docs = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert len({d["uid"] for d in docs}) == len(docs)
    for d in docs:
        assert d["panels"] and all(p["targets"] and p["datasource"] for p in d["panels"]), d["uid"]


def test_dashboard_expressions_parse_as_promql(tmp_path: Path) -> None:
    # Grafana's variables are not PromQL: give them values, then let promtool parse each one.
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(_dashboard_exprs())]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    run = _promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_metric_in_the_dashboards_is_exported_by_a_live_daemon(exported: Exported) -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) > 50
    assert unknown_names(exprs, exported) == []
    assert unknown_names(["sum by (shard) (rate(tierproxy_lb_requests_total[5m]))"], exported) == []  # no samples:
    assert unknown_names(["sum by (zone) (tierproxy_lb_backend_up)"], exported) == ["by (zone)"]  # labels known
