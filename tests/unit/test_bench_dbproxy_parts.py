"""bench/dbproxy.py's command line: what a run without --workloads measures (the smoke test in
tests/integration/test_bench_dbproxy_smoke.py names every workload, `orm` included, in one run);
where the replicas' servers run (`replica_cpus`), and bench/common.py's `pin_tree`, which puts a
real process tree there."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from bench import dbproxy
from bench.common import pin_tree


def test_the_default_workloads_are_pgbenchs_own_three_without_orm() -> None:
    parser = argparse.ArgumentParser()
    dbproxy.add_arguments(parser)
    args = parser.parse_args([])
    assert args.workloads.split(",") == ["select-only simple", "select-only extended", "tpcb-like simple"]
    assert args.targets.split(",") == ["tierproxy", "pgbouncer", "pgpool", "direct"]
    assert args.share_cores is False  # the replicas' servers each on a CPU of its own unless asked


def test_each_replica_gets_a_cpu_of_its_own_unless_cores_are_shared_or_there_is_one() -> None:
    assert dbproxy.replica_cpus(2, 2, share=False) == [{0}, {1}]
    assert dbproxy.replica_cpus(4, 2, share=False) == [{0}, {1}]
    assert dbproxy.replica_cpus(2, 3, share=False) == [{0}, {1}, {0}]  # more replicas than CPUs: they share
    assert dbproxy.replica_cpus(2, 2, share=True) is None
    assert dbproxy.replica_cpus(1, 2, share=False) is None


def _allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pinning to CPU 1 needs two CPUs")
def test_pin_tree_pins_a_process_its_children_and_what_they_fork_later() -> None:
    # A real tree: a shell with two sleeping children, whose pids it prints once they exist
    # (`$!`); when told (a line on stdin) it forks a third and prints that one's too.
    script = "sleep 60 & echo $!; sleep 60 & echo $!; read line; sleep 60 & echo $!; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        before = [int(proc.stdout.readline()), int(proc.stdout.readline())]
        assert sorted(before) == sorted(_children(proc.pid))
        assert pin_tree(proc.pid, {1}) == 3  # the shell and its two children, one thread each
        assert [_allowed(pid) for pid in (proc.pid, *before)] == ["1", "1", "1"]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        later = int(proc.stdout.readline())
        assert _allowed(later) == "1"  # forked after the pinning: inherited
    finally:
        for pid in _children_left(proc.pid):
            os.kill(pid, 9)
        proc.kill()
        proc.wait()


def _children_left(pid: int) -> list[int]:
    try:
        return _children(pid)
    except OSError:
        return []
