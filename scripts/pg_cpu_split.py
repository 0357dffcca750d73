"""Where a pgbench transaction's CPU goes: the proxy, PostgreSQL, pgbench (analysis, not a bench).

    PYTHONPATH=$PWD python scripts/pg_cpu_split.py [--seconds 4] [--rounds 2] [--mode -S]
        [--shared-buffers 256MB] [--pgbouncer-modes transaction,session]

One devstack cluster (a primary, two streaming replicas, pgbench scale 10). Targets: the dbproxy
with its defaults (reads over both replicas, each session bound to one); the same with `[routing]
balance = "statement"` (each read chooses a replica); the dbproxy over one replica; over the
primary alone; PgBouncer (transaction pooling, primary only; `--pgbouncer-modes
transaction,session` adds it in session pooling). For each, `pgbench <mode> -c16 -j2
-T<seconds>` runs alone, and the CPU seconds (utime + stime from /proc, live process trees) of the proxy, of every PostgreSQL process
of the cluster and of pgbench (RUSAGE_CHILDREN) are divided by the transactions. Absolute figures
drift with the machine's load; compare targets within one round. docs/perf.md, "Where a
transaction's CPU goes", has what it showed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import tree_cpu_seconds
from bench.pgpeers import start_pgbouncer
from proxy.devstack.dbproxy import DbProxyServer, dbproxy_config
from proxy.devstack.ports import allocate_port
from proxy.devstack.postgres import start_pg_cluster

USERS = {"app": "app-secret"}


def _dbproxy(cluster: Any, replicas: list[Any], workdir: Path, name: str, extra: str = "") -> DbProxyServer:
    view = types.SimpleNamespace(primary=cluster.primary, replicas=replicas, user=cluster.user,
                                 password=cluster.password)  # fmt: skip
    port, admin = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    (workdir / name).mkdir()
    config = dbproxy_config(view, port=port.port, admin_port=admin.port, users=USERS, extra=extra)  # type: ignore[arg-type]
    return DbProxyServer(config, log_dir=workdir / name, users=USERS, port_lock=port, admin_lock=admin).wait_ready()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", default="-S", help="pgbench's workload flag (-S: select-only)")
    parser.add_argument("--shared-buffers", default=None,
                        help="PostgreSQL's shared_buffers for the cluster (default: the dev stack's, 32MB)")
    parser.add_argument("--pgbouncer-modes", default="transaction",
                        help="PgBouncer pool modes to run, comma-separated: transaction (the bench's), session")
    args = parser.parse_args()
    pgbench, pgbouncer = shutil.which("pgbench"), shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert pgbench is not None, "pgbench is not installed"
    workdir = Path(tempfile.mkdtemp(prefix="tierproxy-cpusplit-"))
    settings = {"shared_buffers": args.shared_buffers} if args.shared_buffers else None
    cluster = start_pg_cluster(2, log_dir=workdir / "pg", name="cpusplit", settings=settings)
    closers: list[Any] = []
    try:
        env = {**os.environ, **cluster.client_env()}
        subprocess.run([pgbench, "-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", str(cluster.primary.port),
                        "-U", cluster.user, "postgres"], env=env, check=True, capture_output=True)  # fmt: skip
        cluster.wait_for_replicas_caught_up(timeout=120)
        targets = []
        for name, replicas, extra in (
            ("tierproxy", cluster.replicas, ""),
            ("tierproxy balance=statement", cluster.replicas, '[routing]\nbalance = "statement"\n'),
            ("tierproxy, 1 replica", cluster.replicas[:1], ""),
            ("tierproxy, primary only", [], ""),
        ):
            proxy = _dbproxy(cluster, replicas, workdir, f"dbproxy{len(closers)}", extra)
            closers.append(proxy)
            targets.append((name, proxy.port, "app", "app-secret", [proxy.process.pid]))
        for mode in args.pgbouncer_modes.split(","):
            bouncer = start_pgbouncer(cluster, workdir, pgbouncer, pool_size=16, pool_mode=mode)
            closers.append(bouncer)
            name = "pgbouncer" if mode == "transaction" else f"pgbouncer {mode}"
            targets.append((name, bouncer.port, bouncer.user, bouncer.password, [bouncer.process.pid]))
        servers = [s.process.pid for s in (cluster.primary, *cluster.replicas)]

        def run(name: str, port: int, user: str, password: str, pids: list[int], seconds: int, show: bool) -> None:
            e = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable"}
            proxy0, pg0 = tree_cpu_seconds(pids), tree_cpu_seconds(servers)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run([pgbench, args.mode, "-c", "16", "-j", "2", "-T", str(seconds), "-n", "-h", "127.0.0.1",
                                  "-p", str(port), "-U", user, "postgres"], env=e, capture_output=True, text=True, check=False).stdout  # fmt: skip
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proxy1, pg1 = tree_cpu_seconds(pids), tree_cpu_seconds(servers)
            line = [ln for ln in out.splitlines() if "actually processed" in ln]
            if not line:
                print(f"{name}: pgbench failed:\n{out}", flush=True)
                return
            n = int(line[0].split(":")[1].split("/")[0])
            bench = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            parts = (proxy1 - proxy0, pg1 - pg0, bench)
            if show:
                us = [f"{p / n * 1e6:6.1f}" for p in parts]
                print(f"{name:26s} tps {n / seconds:8.0f}   us per transaction: proxy {us[0]}  postgres {us[1]}  "
                      f"pgbench {us[2]}  all {sum(parts) / n * 1e6:6.1f}", flush=True)  # fmt: skip

        for t in targets:
            run(*t, 2, False)  # warm-up
        for i in range(args.rounds):
            print(f"-- round {i + 1}", flush=True)
            for t in targets:
                run(*t, args.seconds, True)
    finally:
        for c in reversed(closers):
            c.close()
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
