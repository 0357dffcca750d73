"""Benchmark the dbproxy's query cache: a read-heavy pgbench script, cache on vs off vs PgBouncer.

Theory of operation
-------------------
1. One devstack cluster (a primary and two streaming replicas) initialised with `pgbench -i -s
   <scale>`; the replicas catch up before anything is measured.
2. Targets on that cluster: "cache-on" (tierproxy dbproxy with `[cache] enabled`), "cache-off"
   (the same proxy without it: reads split over the replicas) and "pgbouncer" (transaction
   pooling, primary only).
3. The workload is `SCRIPT`, read-heavy: per transaction, with probability `--read-share` (95 %)
   a read of one account from a hot set of `--hot` (1,000) accounts, cached by a
   `[[cache.rules]]` entry naming pgbench_accounts (`CACHE_CONFIG`), else an INSERT into pgbench_history (a write that does not touch the accounts, so it
   invalidates nothing the reads use; `--write-table accounts` makes the writes UPDATE the
   accounts instead, invalidating the cached reads of that table every time). It runs with the
   simple and the extended protocol.
4. A warm-up per target, then `--rounds` rounds in which every (workload, target) pair runs once,
   in a fixed order (bench/pgbench.py). For "cache-on", the proxy's `query_cache_hits_total` and
   `query_cache_misses_total` (/metrics) are read around each run: the run's hit ratio.
5. Per (workload, target) the medians; TPS ratios to cache-off and to PgBouncer per round, then
   their median; the hit ratio's median. Output: the table on stdout and in table.txt,
   results.json with every run, and a PNG chart when matplotlib is there.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Binary, find_binary, median
from bench.pgbench import (
    Target,
    initialise,
    run_pgbench,
    run_rounds,
    set_up,
    summarise,
    tear_down,
    write_report,
)
from bench.pgbench import log as _log
from bench.pgpeers import start_pgbouncer
from proxy.devstack.dbproxy import DbProxyServer, start_dbproxy
from proxy.devstack.postgres import PgCluster, start_pg_cluster
from proxy.devstack.process import DevstackError

__all__ = ["SCRIPT", "add_arguments", "hit_ratio", "run", "script"]

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("cache-on", "cache-off", "pgbouncer")
# Not -M prepared: PgBouncer's transaction pooling does not keep named statements.
WORKLOADS = {"read-heavy simple": ["-M", "simple"], "read-heavy extended": ["-M", "extended"]}
SMOKE = {"duration": 1, "warmup": 0, "rounds": 1, "scale": 1, "clients": 4}
# The reads are cached by a rule, not by the hint: pgbench would read the hint's `:cache` as a
# variable reference (and in prepared mode turn it into a parameter).
CACHE_CONFIG = '[cache]\nenabled = true\n[[cache.rules]]\ntables = ["pgbench_accounts"]\nttl = 60\n'

SCRIPT = """\\set aid random(1, {hot})
\\set r random(1, 1000)
\\if :r <= {reads}
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = :aid;
\\else
{write};
\\endif
"""
WRITES = {
    "history": "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, 1, CURRENT_TIMESTAMP)",
    "accounts": "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid",
}

COLUMNS = (
    ("workload", "workload", "s"),
    ("target", "target", "s"),
    ("tps", "TPS", ",.0f"),
    ("latency_ms", "lat avg ms", ".2f"),
    ("failed", "failed", "d"),
    ("hit_ratio", "hit ratio", ".3f"),
    ("proxy_cpu_s", "proxy CPU s", ".2f"),
    ("vs_cache-off", "TPS vs cache off", ".2f"),
    ("vs_pgbouncer", "TPS vs PgBouncer", ".2f"),
)


def script(hot: int, read_share: float, write_table: str) -> str:
    """The pgbench script: reads of `hot` accounts with probability `read_share`, else a write."""
    return SCRIPT.format(hot=hot, reads=round(read_share * 1000), write=WRITES[write_table])


def hit_ratio(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Hits / (hits + misses) between two readings of the proxy's counters; None without lookups."""
    hits = after.get("hits", 0.0) - before.get("hits", 0.0)
    misses = after.get("misses", 0.0) - before.get("misses", 0.0)
    return hits / (hits + misses) if hits + misses > 0 else None


def _counters(proxy: DbProxyServer) -> dict[str, float]:
    out = {}
    with urllib.request.urlopen(f"http://{proxy.host}:{proxy.admin_port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            for name in ("hits", "misses"):
                if line.startswith(f"tierproxy_dbproxy_query_cache_{name}_total "):
                    out[name] = float(line.split()[-1])
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target (2)")
    parser.add_argument("--clients", type=int, default=16, help="pgbench clients (16)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--hot", type=int, default=1000, help="accounts the reads choose from (1000)")
    parser.add_argument("--read-share", type=float, default=0.95, help="share of reads (0.95)")
    parser.add_argument("--write-table", choices=sorted(WRITES), default="history",
                        help="what the writes change: history (no invalidation of the reads) or accounts")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, 1 round: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/cache-<timestamp>/)")


def _start(wanted: list[str], cluster: PgCluster, workdir: Path, bins: dict[str, Binary], clients: int,
           closers: list[Any], problems: list[str]) -> tuple[list[Target], DbProxyServer | None]:  # fmt: skip
    targets, cached = [], None
    for name in wanted:
        try:
            if name in ("cache-on", "cache-off"):
                proxy = start_dbproxy(cluster, log_dir=workdir / name, users={"app": "app-secret"},
                                      extra=CACHE_CONFIG if name == "cache-on" else "")  # fmt: skip
                closers.append(proxy)
                if name == "cache-on":
                    cached = proxy
                what = "query cache on" if name == "cache-on" else "query cache off"
                targets.append(Target(name, f"tierproxy dbproxy, {what}, read/write split over primary + 2 replicas",
                                      proxy.port, "app", "app-secret", [proxy.process.pid],
                                      lambda p=proxy: p.process.running))  # fmt: skip
            elif bins["pgbouncer"].path is not None:
                peer = start_pgbouncer(cluster, workdir, bins["pgbouncer"].path, pool_size=clients)
                closers.append(peer)
                targets.append(Target(name, "PgBouncer, transaction pooling, primary only", peer.port, peer.user,
                                      peer.password, [peer.process.pid], lambda p=peer: p.process.running))  # fmt: skip
        except (DevstackError, OSError) as exc:
            problems.append(f"{name} failed to start: {exc}")
            _log(problems[-1])
    return targets, cached


def _run_one(pgbench: str, cached: DbProxyServer | None, clients: int) -> Any:
    """pgbench.run_rounds' measured run for this bench: run_pgbench with the cache's hit ratio
    over the run (its counters read around each cache-on run), None for the other targets."""
    def one(t: Target, flags: Sequence[str], seconds: int) -> dict[str, Any]:
        before = _counters(cached) if cached is not None and t.name == "cache-on" else None
        r = run_pgbench(pgbench, t, flags, clients, seconds)
        r["hit_ratio"] = hit_ratio(before, _counters(cached)) if before is not None and cached else None
        return r

    return one


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds, "clients": args.clients,
                "scale": args.scale, "smoke": args.smoke, "hot": args.hot, "read_share": args.read_share,
                "write_table": args.write_table}  # fmt: skip
    if args.smoke:
        settings.update(duration_s=SMOKE["duration"], warmup_s=SMOKE["warmup"], rounds=SMOKE["rounds"],
                        scale=SMOKE["scale"], clients=SMOKE["clients"])  # fmt: skip
    if not 0.0 <= args.read_share <= 1.0 or not 1 <= args.hot <= settings["scale"] * 100_000:
        print("--read-share must lie in [0, 1] and --hot in [1, scale * 100000]", file=sys.stderr)
        return 2
    setup = set_up("cache", {"pgbouncer": find_binary("pgbouncer", "pgbouncer")}, args, TARGETS, WORKLOADS, REPO)
    if setup is None:
        return 2
    bins, pgbench, out, workdir, machine, started, missing, wanted, workloads = setup
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    closers: list[Any] = []
    cluster: PgCluster | None = None
    text = script(args.hot, args.read_share, args.write_table)
    (workdir / "cache.sql").write_text(text)
    try:
        for name in ("cache-on", "cache-off"):
            (workdir / name).mkdir()
        cluster = start_pg_cluster(2, log_dir=workdir / "pg", name="bench")
        assert cluster.primary is not None
        initialise(pgbench, cluster, settings["scale"])
        cluster.wait_for_replicas_caught_up(timeout=120)
        targets, cached = _start(wanted, cluster, workdir, bins, settings["clients"], closers, problems)
        flags = {w: [*WORKLOADS[w], "-f", str(workdir / "cache.sql")] for w in workloads}
        run_rounds(pgbench, targets, flags, settings, next(iter(flags.values())), runs, problems,
                   run_one=_run_one(pgbench, cached, settings["clients"]),
                   describe=lambda r: f"hit ratio {r['hit_ratio']}")  # fmt: skip
    except DevstackError as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        tear_down(closers, cluster, workdir, out)

    rows = summarise(runs, wanted, workloads, ratios_to=("cache-off", "pgbouncer"))
    for row in rows:
        row["hit_ratio"] = median(r["hit_ratio"] for r in runs if r["workload"] == row["workload"]
                                  and r["target"] == row["target"] and r.get("hit_ratio") is not None)  # fmt: skip
    header = (f"tierproxy dbproxy query cache benchmark: pgbench -c{settings['clients']} -j2 "
              f"-T{settings['duration_s']}, scale {settings['scale']}, {settings['rounds']} round(s), medians; "
              f"{args.read_share:.0%} cached reads of {args.hot} hot accounts, writes to {args.write_table}\n"
              f"{machine['note']}")  # fmt: skip
    write_report(out, benchmark="cache", header=header, rows=rows, columns=COLUMNS,
                 panels=(("tps", "TPS (median)"), ("latency_ms", "latency ms (median)")),
                 title=f"tierproxy dbproxy query cache ({machine['nproc']} shared cores)",
                 results={"command": ["python", "-m", "bench", *argv], "started": started, "settings": settings,
                          "script": text, "machine": machine, "runs": runs},
                 problems=problems, missing=missing)  # fmt: skip
    return 1 if problems else 0
