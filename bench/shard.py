"""Benchmark tierproxy shard against PgBouncer and a direct baseline on one shard, with pgbench.

Theory of operation
-------------------
1. One devstack PostgreSQL server (durability off) is the shard: `users (user_id bigint primary
   key, name text)` with `--users` rows (`user_id` 1..n).
2. Targets, in one run, all in front of that same server: "tierproxy" (`tierproxy shard` with one
   shard, s0, and the table group `users` by `user_id`, map modulo: every statement is parsed,
   its key extracted and routed; `--workers` processes), "pgbouncer" (transaction pooling, the
   fair peer for what a proxy in front of one shard costs) and "direct" (pgbench straight at the
   server: no proxy at all). The router over one shard does exactly the per-statement work it does
   over many, without spreading the load over more servers than the peers get.
3. Workloads: pgbench custom scripts keyed by a random user id (`\\set uid random(1, :n)`):
   "read by key" (`SELECT name FROM users WHERE user_id = :uid`) with the simple and the extended
   protocol (the router routes at Bind with the bound key), and "write by key" (`UPDATE users SET
   name = ... WHERE user_id = :uid`, simple protocol); `pgbench -c <clients> -j 2 -T <duration>`.
4. Rounds, medians, per-round ratios and CPU accounting as bench/dbproxy.py (bench/pgbench.py): a
   warm-up per target, then `--rounds` rounds in which every (workload, target) pair runs once.
5. The report says what each proxy costs over going direct: TPS as a fraction of direct's and the
   latency it adds (each per round, then the median), beside each other for the router and
   PgBouncer; also TPS vs PgBouncer and transactions per proxy CPU-second. Output: a table on
   stdout and in table.txt, results.json with every run and machine info, a PNG chart.

PgBouncer missing: skipped with the apt package to install. A target that fails to start, or a run
with failed transactions or a pgbench error, makes the exit status 1 after the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.common import find_binary
from bench.pgbench import (
    Target,
    log,
    run_rounds,
    set_up,
    summarise,
    tear_down,
    write_report,
)
from bench.pgpeers import start_pgbouncer
from proxy.devstack.postgres import PgCluster, start_pg_cluster
from proxy.devstack.process import DevstackError
from proxy.devstack.shard import start_shard_router

__all__ = ["add_arguments", "run"]

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("tierproxy", "pgbouncer", "direct")
SCRIPTS = {
    "read": "\\set uid random(1, :n)\nSELECT name FROM users WHERE user_id = :uid;\n",
    "write": "\\set uid random(1, :n)\nUPDATE users SET name = 'user ' || :uid::text WHERE user_id = :uid;\n",
}
# workload -> (script, pgbench protocol)
WORKLOADS = {
    "read by key simple": ("read", "simple"),
    "read by key extended": ("read", "extended"),
    "write by key simple": ("write", "simple"),
}
GROUPS = '[groups.users]\ntables = ["users"]\nkey = "user_id"\nkey_type = "integer"\nmap = "modulo"\n'
SMOKE = {"duration": 1, "warmup": 0, "rounds": 1, "users": 1000, "clients": 4}

COLUMNS = (
    ("workload", "workload", "s"),
    ("target", "target", "s"),
    ("tps", "TPS", ",.0f"),
    ("latency_ms", "lat avg ms", ".3f"),
    ("failed", "failed", "d"),
    ("vs_direct", "TPS vs direct", ".2f"),
    ("added_latency_ms", "added lat ms", ".3f"),
    ("vs_pgbouncer", "TPS vs PgBouncer", ".2f"),
    ("proxy_cpu_s", "proxy CPU s", ".2f"),
    ("tps_per_cpu_s", "TPS/CPU-s", ",.0f"),
    ("cpu_vs_pgbouncer", "TPS/CPU vs PgBouncer", ".2f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target (2)")
    parser.add_argument("--clients", type=int, default=16, help="pgbench clients (16)")
    parser.add_argument("--users", type=int, default=100_000, help="rows in users, keys 1..n (100000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--workers", type=int, default=1, help="tierproxy shard processes (workers = N, 1)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, 1 round: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/shard-<timestamp>/)")


def _flags(workdir: Path, workload: str, users: int) -> list[str]:
    script, protocol = WORKLOADS[workload]
    path = workdir / f"{script}.sql"
    path.write_text(SCRIPTS[script])
    return ["-f", str(path), "-D", f"n={users}", "-M", protocol]


def _start(wanted: list[str], cluster: PgCluster, workdir: Path, pgbouncer: str | None, settings: dict[str, Any],
           closers: list[Any], problems: list[str]) -> list[Target]:  # fmt: skip
    assert cluster.primary is not None
    targets = []
    for name in wanted:
        try:
            if name == "tierproxy":
                router = start_shard_router({"s0": cluster.primary}, log_dir=workdir, backend_user=cluster.user,
                                            backend_password=cluster.password, groups=GROUPS,
                                            head=f"workers = {settings['workers']}\nlog_level = \"warning\"",
                                            users={"app": "app-secret"}, name="tierproxy-shard")  # fmt: skip
                closers.append(router)
                targets.append(Target(name, f"tierproxy shard ({settings['workers']} worker(s)), one shard, users "
                                      "by user_id (modulo)", router.port, "app", "app-secret",
                                      [router.process.pid], lambda r=router: r.process.running))  # fmt: skip
            elif name == "pgbouncer":
                if pgbouncer is None:
                    continue
                peer = start_pgbouncer(cluster, workdir, pgbouncer, pool_size=settings["clients"])
                closers.append(peer)
                targets.append(Target(name, "PgBouncer, transaction pooling, the same shard", peer.port, peer.user,
                                      peer.password, [peer.process.pid], lambda p=peer: p.process.running))  # fmt: skip
            elif name == "direct":
                targets.append(Target(name, "pgbench straight at the shard", cluster.primary.port, cluster.user,
                                      cluster.password, [], lambda: True))  # fmt: skip
        except (DevstackError, OSError) as exc:
            problems.append(f"{name} failed to start: {exc}")
            log(problems[-1])
    return targets


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                "clients": args.clients, "users": args.users, "smoke": args.smoke, "workers": args.workers}  # fmt: skip
    if args.smoke:
        settings.update(duration_s=SMOKE["duration"], warmup_s=SMOKE["warmup"], rounds=SMOKE["rounds"],
                        users=SMOKE["users"], clients=SMOKE["clients"])  # fmt: skip
    setup = set_up("shard", {"pgbouncer": find_binary("pgbouncer", "pgbouncer")}, args, TARGETS, WORKLOADS, REPO)
    if setup is None:
        return 2
    bins, pgbench, out, workdir, machine, started, missing, wanted, workloads = setup
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    closers: list[Any] = []
    cluster: PgCluster | None = None
    try:
        cluster = start_pg_cluster(0, log_dir=workdir / "pg", name="bench-shard")
        assert cluster.primary is not None
        cluster.primary.psql("CREATE TABLE users (user_id bigint PRIMARY KEY, name text)")
        cluster.primary.psql(f"INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, {settings['users']}) g",
                             timeout=600)  # fmt: skip
        cluster.primary.psql("VACUUM ANALYZE users", timeout=600)
        targets = _start(wanted, cluster, workdir, bins["pgbouncer"].path, settings, closers, problems)
        flags = {w: _flags(workdir, w, settings["users"]) for w in workloads}
        run_rounds(pgbench, targets, flags, settings, _flags(workdir, "read by key extended", settings["users"]),
                   runs, problems)  # fmt: skip
    except DevstackError as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        tear_down(closers, cluster, workdir, out)

    rows = summarise(runs, wanted, workloads, ratios_to=("direct", "pgbouncer"), cpu_ratio_to="pgbouncer",
                     added_over="direct")  # fmt: skip
    header = (f"tierproxy shard benchmark: pgbench -c{settings['clients']} -j2 -T{settings['duration_s']}, "
              f"custom scripts keyed by a random user id over {settings['users']:,} users, one shard, "
              f"{settings['rounds']} round(s), medians, tierproxy workers = {settings['workers']}\n"
              f"{machine['note']}")  # fmt: skip
    write_report(out, benchmark="shard", header=header, rows=rows, columns=COLUMNS,
                 panels=(("tps", "TPS (median)"), ("added_latency_ms", "latency added over direct, ms (median)", ".3f")),
                 title=f"tierproxy shard vs PgBouncer and direct, one shard ({machine['nproc']} shared cores)",
                 results={"command": ["python", "-m", "bench", *argv], "started": started, "settings": settings,
                          "machine": machine, "scripts": SCRIPTS, "runs": runs},
                 problems=problems, missing=missing)  # fmt: skip
    return 1 if problems else 0

