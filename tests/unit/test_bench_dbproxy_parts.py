"""bench/dbproxy.py's command line: what a run without --workloads measures (the smoke test in
tests/integration/test_bench_dbproxy_smoke.py names every workload, `orm` included, in one run)."""

from __future__ import annotations

import argparse

from bench import dbproxy


def test_the_default_workloads_are_pgbenchs_own_three_without_orm() -> None:
    parser = argparse.ArgumentParser()
    dbproxy.add_arguments(parser)
    args = parser.parse_args([])
    assert args.workloads.split(",") == ["select-only simple", "select-only extended", "tpcb-like simple"]
    assert args.targets.split(",") == ["tierproxy", "pgbouncer", "pgpool", "direct"]
