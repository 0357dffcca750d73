"""Benchmark tierproxy dbproxy against PgBouncer, pgpool-II and a direct baseline, with pgbench.

Theory of operation
-------------------
1. One devstack cluster (a primary and two streaming replicas, durability off) initialised with
   `pgbench -i -s <scale>`; the replicas catch up before anything is measured.
2. Targets on that cluster: "tierproxy" (read/write split over all three servers, read-your-writes
   on, its default per-session replica choice: each session binds to one replica, one replica
   connection per session), "pgbouncer" (transaction pooling, primary only), "pgpool"
   (streaming-replication mode, load balancing on) and "direct" (pgbench straight at the primary:
   no proxy at all). On request (`--targets ...,tierproxy-statement`), tierproxy with `[routing]
   balance = "statement"` (each read chooses a replica: a session comes to hold a connection on
   every replica); and `tierproxy-1replica`, tierproxy over the primary and the first replica only:
   its reads then keep one PostgreSQL server busy, as PgBouncer's do.
   Each replica's server runs on a CPU of its own (replica i on CPU i - 1, its postmaster, its
   background processes and every backend it forks), as replicas run on hosts of their own in the
   architecture this serves; the primary, the proxies and pgbench run on every CPU. Two servers
   taking turns on the same cores cost PostgreSQL itself 8-14 us more per select-only transaction
   behind the dbproxy, and the extended protocol shows it even with pgbench straight at both
   replicas (docs/perf.md "PostgreSQL's share, second look"); PgBouncer's runs use the primary
   alone and are not touched by it. `--share-cores` leaves every server on every CPU (the bench
   before this); the table's header and results.json (`settings.replica_cpus`) say which ran. On
   one CPU nothing is pinned.
3. Workloads: select-only with the simple and the extended protocol, and tpcb-like (writes, in
   transactions) with the simple protocol; `pgbench -c <clients> -j 2 -T <duration>`. On request
   (`--workloads orm`), an ORM's statement mix from bench/ormsql.py (string literals, IN lists,
   tagging comments, every text new) on tables it creates.
4. A warm-up run per target, then `--rounds` rounds; in each round every (workload, target) pair
   runs once, in a fixed order, so slow drift of the machine hits all of them alike. Around each
   run, the CPU seconds of the proxy's process tree come from /proc: transactions per proxy
   CPU-second is what the proxy costs, less sensitive than TPS to the sharing of the 2 cores by
   pgbench, the proxy and three PostgreSQL servers.
5. Per (workload, target) the median over rounds (failed transactions are summed, never hidden).
   Ratios to PgBouncer and pgpool-II: per round (runs seconds apart, in one state of the machine),
   then the median of those, which cancels drift that a ratio of medians would mix in. Output: a
   table on stdout and in table.txt, results.json with every run and machine info, a PNG chart.

A peer whose binary is missing is skipped with the apt package to install. A target that fails to
start, or a run with failed transactions or a pgbench error, makes the exit status 1 after the
report of what did run. Running pgbench, the rounds, the summary and the report are
bench/pgbench.py's, shared with the shard router's benchmark.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import ormsql
from bench.common import Binary, find_binary, pin_tree
from bench.pgbench import (
    Target,
    initialise,
    run_rounds,
    set_up,
    summarise,
    tear_down,
    write_report,
)
from bench.pgbench import log as _log
from bench.pgpeers import Peer, start_pgbouncer, start_pgpool
from proxy.devstack.dbproxy import DbProxyServer, start_dbproxy
from proxy.devstack.postgres import PgCluster, start_pg_cluster
from proxy.devstack.process import DevstackError

__all__ = ["add_arguments", "run"]

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("tierproxy", "tierproxy-statement", "tierproxy-1replica", "pgbouncer", "pgpool", "direct")
DEFAULT_TARGETS = ("tierproxy", "pgbouncer", "pgpool", "direct")  # the other two on request
WORKLOADS = {
    "select-only simple": ["-S", "-M", "simple"],
    "select-only extended": ["-S", "-M", "extended"],
    "tpcb-like simple": ["-M", "simple"],
    # An ORM's statement mix (bench/ormsql.py): string literals, IN lists, tagging comments; not in
    # the default set (`--workloads orm`). "{orm}" is the script's path, written at run time.
    "orm": ["-M", "simple", "-f", "{orm}"],
}
DEFAULT_WORKLOADS = ("select-only simple", "select-only extended", "tpcb-like simple")
SMOKE = {"duration": 1, "warmup": 0, "rounds": 1, "scale": 1, "clients": 4}

COLUMNS = (
    ("workload", "workload", "s"),
    ("target", "target", "s"),
    ("tps", "TPS", ",.0f"),
    ("latency_ms", "lat avg ms", ".2f"),
    ("failed", "failed", "d"),
    ("proxy_cpu_s", "proxy CPU s", ".2f"),
    ("tps_per_cpu_s", "TPS/CPU-s", ",.0f"),
    ("vs_pgbouncer", "TPS vs PgBouncer", ".2f"),
    ("vs_pgpool", "TPS vs pgpool", ".2f"),
    ("cpu_vs_pgbouncer", "TPS/CPU vs PgBouncer", ".2f"),
    ("postgres_us_per_txn", "PostgreSQL us/txn", ".1f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target (2)")
    parser.add_argument("--clients", type=int, default=16, help="pgbench clients (16)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--workers", type=int, default=1, help="tierproxy dbproxy processes (workers = N, 1)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"subset of {','.join(WORKLOADS)} (default: all but orm)")
    parser.add_argument("--share-cores", action="store_true",
                        help="leave each replica's PostgreSQL server on every CPU (default: replica i on CPU i - 1)")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, 1 round: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/dbproxy-<timestamp>/)")


def _start(wanted: list[str], cluster: PgCluster, workdir: Path, bins: dict[str, Binary], settings: dict[str, Any],
           closers: list[Any], problems: list[str]) -> list[Target]:  # fmt: skip
    assert cluster.primary is not None
    targets = []
    for name in wanted:
        try:
            if name in ("tierproxy", "tierproxy-statement", "tierproxy-1replica"):
                # tierproxy-statement: the same with `[routing] balance = "statement"` (each read
                # chooses a replica: a session holds a connection on each replica);
                # tierproxy-1replica: the primary and the first replica only (its view of the cluster).
                statement = name == "tierproxy-statement"
                one = name == "tierproxy-1replica"
                log_dir = workdir / name if name != "tierproxy" else workdir  # its dbproxy.log kept under its name
                log_dir.mkdir(exist_ok=True)
                view: Any = cluster
                if one:
                    view = SimpleNamespace(primary=cluster.primary, replicas=cluster.replicas[:1], user=cluster.user,
                                           password=cluster.password)  # fmt: skip
                proxy: DbProxyServer = start_dbproxy(
                    view, log_dir=log_dir, users={"app": "app-secret"}, workers=settings["workers"],
                    extra='[routing]\nbalance = "statement"\n' if statement else "",
                )  # fmt: skip
                closers.append(proxy)
                targets.append(Target(name, f"tierproxy dbproxy ({settings['workers']} worker(s)): read/write split "
                                      + ("over primary + 1 replica" if one else "over primary + 2 replicas")
                                      + (", per-statement replica choice" if statement else ""),
                                      proxy.port, "app", "app-secret",
                                      [proxy.process.pid], lambda p=proxy: p.process.running))  # fmt: skip
            elif name == "pgbouncer":
                if bins["pgbouncer"].path is None:
                    continue
                peer: Peer = start_pgbouncer(cluster, workdir, bins["pgbouncer"].path, pool_size=settings["clients"])
                closers.append(peer)
                targets.append(Target(name, "PgBouncer, transaction pooling, primary only", peer.port, peer.user,
                                      peer.password, [peer.process.pid], lambda p=peer: p.process.running))  # fmt: skip
            elif name == "pgpool":
                if bins["pgpool"].path is None:
                    continue
                peer = start_pgpool(cluster, workdir, bins["pgpool"].path, children=settings["clients"] + 2)
                closers.append(peer)
                targets.append(Target(name, "pgpool-II, streaming replication, load balancing on", peer.port,
                                      peer.user, peer.password, [peer.process.pid], lambda p=peer: p.process.running))  # fmt: skip
            elif name == "direct":
                targets.append(Target(name, "pgbench straight at the primary", cluster.primary.port, cluster.user,
                                      cluster.password, [], lambda: True))  # fmt: skip
        except (DevstackError, OSError) as exc:
            problems.append(f"{name} failed to start: {exc}")
            _log(problems[-1])
    return targets


def replica_cpus(nproc: int, replicas: int, share: bool) -> list[set[int]] | None:
    """The CPUs each replica's server may use: one of its own per replica (replica i on CPU
    (i - 1) mod nproc), or None (`--share-cores`, or one CPU: every server on every CPU)."""
    if share or nproc < 2:
        return None
    return [{i % nproc} for i in range(replicas)]


def _setup_orm(pgbench: str, cluster: PgCluster, workdir: Path) -> None:
    """The ORM workload's tables (bench/ormsql.py), created through pgbench on the primary, and
    its script in workdir/orm.sql."""
    assert cluster.primary is not None
    (workdir / "orm-setup.sql").write_text(ormsql.SETUP_SQL)
    (workdir / "orm.sql").write_text(ormsql.SCRIPT)
    done = subprocess.run([pgbench, "-n", "-t", "1", "-c", "1", "-f", str(workdir / "orm-setup.sql"), "-h", "127.0.0.1",
                           "-p", str(cluster.primary.port), "-U", cluster.user, "postgres"],
                          env={**os.environ, **cluster.client_env()}, capture_output=True, text=True, check=False,
                          timeout=300)  # fmt: skip
    if done.returncode != 0:
        raise DevstackError(f"the orm workload's tables could not be created:\n{done.stdout}{done.stderr}")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                "clients": args.clients, "scale": args.scale, "smoke": args.smoke, "workers": args.workers}  # fmt: skip
    if args.smoke:
        settings.update(duration_s=SMOKE["duration"], warmup_s=SMOKE["warmup"], rounds=SMOKE["rounds"],
                        scale=SMOKE["scale"], clients=SMOKE["clients"])  # fmt: skip
    peers = {"pgbouncer": find_binary("pgbouncer", "pgbouncer"), "pgpool": find_binary("pgpool", "pgpool2")}
    setup = set_up("dbproxy", peers, args, TARGETS, WORKLOADS, REPO)
    if setup is None:
        return 2
    bins, pgbench, out, workdir, machine, started, missing, wanted, workloads = setup
    pinning = replica_cpus(machine["nproc"], 2, args.share_cores)
    settings["replica_cpus"] = None if pinning is None else [sorted(c) for c in pinning]
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    closers: list[Any] = []
    cluster: PgCluster | None = None
    try:
        cluster = start_pg_cluster(2, log_dir=workdir / "pg", name="bench")
        assert cluster.primary is not None
        initialise(pgbench, cluster, settings["scale"])
        if "orm" in workloads:
            _setup_orm(pgbench, cluster, workdir)
        cluster.wait_for_replicas_caught_up(timeout=120)
        # Before any target starts, so that every backend the replicas fork for them inherits it.
        for replica, cpus in zip(cluster.replicas, pinning or (), strict=False):
            pin_tree(replica.process.pid, cpus)
        targets = _start(wanted, cluster, workdir, bins, settings, closers, problems)
        flags = {w: [f.replace("{orm}", str(workdir / "orm.sql")) for f in WORKLOADS[w]] for w in workloads}
        servers = [s.process.pid for s in (cluster.primary, *cluster.replicas)]  # PostgreSQL's CPU per run
        run_rounds(pgbench, targets, flags, settings, WORKLOADS["select-only extended"], runs, problems,
                   server_pids=servers)
    except DevstackError as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        tear_down(closers, cluster, workdir, out)

    rows = summarise(runs, wanted, workloads, ratios_to=("pgbouncer", "pgpool"), cpu_ratio_to="pgbouncer")
    header = (f"tierproxy dbproxy benchmark: pgbench -c{settings['clients']} -j2 -T{settings['duration_s']}, "
              f"scale {settings['scale']}, {settings['rounds']} round(s), medians, tierproxy workers = "
              f"{settings['workers']}; replicas' servers "
              f"{'on every CPU' if pinning is None else 'each on a CPU of its own (--share-cores: not)'}"
              f"\n{machine['note']}")  # fmt: skip
    write_report(out, benchmark="dbproxy", header=header, rows=rows, columns=COLUMNS,
                 panels=(("tps", "TPS (median)"), ("tps_per_cpu_s", "transactions per proxy CPU-second")),
                 title=f"tierproxy dbproxy vs peers ({machine['nproc']} shared cores)",
                 results={"command": ["python", "-m", "bench", *argv], "started": started, "settings": settings,
                          "machine": machine, "runs": runs},
                 problems=problems, missing=missing)  # fmt: skip
    return 1 if problems else 0
