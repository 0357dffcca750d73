"""Where a pgbench transaction's CPU goes: the proxy, PostgreSQL, pgbench (analysis, not a bench).

    PYTHONPATH=$PWD python scripts/pg_cpu_split.py [--seconds 4 | --transactions N] [--rounds 2] [--mode -S]
        [--protocols simple,extended] [--targets tierproxy,primary,pgbouncer]
        [--shared-buffers 256MB] [--pgbouncer-modes transaction,session] [--pin-replicas]

One devstack cluster (a primary, two streaming replicas, pgbench scale 10). Targets: the dbproxy
with its defaults (reads over both replicas, each session bound to one); the same with `[routing]
balance = "statement"` (each read chooses a replica); the dbproxy over one replica; over the
primary alone; PgBouncer (transaction pooling, primary only; `--pgbouncer-modes
transaction,session` adds it in session pooling); pgbench straight at the primary (`direct`), at one
replica (`direct-replica`), and at both replicas at once (`direct-2replicas`: two pgbench
processes of 8 clients each, one per replica, their transactions summed): PostgreSQL's own cost
per transaction with one server busy and with two busy on the same cores, no proxy in the way.
`--pin-replicas` puts each replica's server on a CPU of its own (bench/dbproxy.py's default).
For each, `pgbench <mode> -c16 -j2 -T<seconds>` (or `-t<transactions>`: a fixed amount of work)
runs alone, once per protocol (`--protocols`: pgbench -M), and the CPU seconds (utime + stime from /proc, live process trees; a
PostgreSQL backend that exited is counted through its postmaster's cutime/cstime) of the proxy, of
every PostgreSQL process of the cluster and of pgbench (RUSAGE_CHILDREN) are divided by the
transactions; so are their context switches, voluntary (a process waits: for a read, a lock) and
involuntary (it is preempted, e.g. by the task its write woke), the PostgreSQL figures of live
processes only. `cores` is what all three used per second of the run: near the machine's cores, the
run was CPU-bound and every microsecond per transaction costs TPS; well below, it was not. Absolute
figures drift with the machine's load; compare targets within one round. docs/perf.md, "Where a
transaction's CPU goes" and "The extended protocol against PgBouncer", has what it showed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import pin_tree, tree_cpu_seconds, tree_pids
from bench.pgpeers import start_pgbouncer
from proxy.devstack.dbproxy import DbProxyServer, dbproxy_config
from proxy.devstack.ports import allocate_port
from proxy.devstack.postgres import start_pg_cluster

USERS = {"app": "app-secret"}
TARGETS = ("tierproxy", "statement", "replica", "primary", "pgbouncer", "direct", "direct-replica",
           "direct-2replicas")  # --targets: the rows below
_CS = re.compile(r"^(voluntary|nonvoluntary)_ctxt_switches:\s*(\d+)", re.MULTILINE)


def _switches(roots: list[int]) -> tuple[int, int, int]:
    """Voluntary and involuntary context switches of `roots` and their live descendants (all
    threads), and the CPU ticks of children they have reaped (a postmaster's exited backends)."""
    vol = invol = reaped = 0
    for pid in tree_pids(roots):
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                counts = dict(_CS.findall(Path(f"/proc/{pid}/task/{task}/status").read_text()))
                vol += int(counts.get("voluntary", 0))
                invol += int(counts.get("nonvoluntary", 0))
            if pid in roots:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                reaped += int(f[13]) + int(f[14])  # cutime, cstime (stat fields 16, 17)
        except OSError:
            continue  # exited between the listing and the read
    return vol, invol, reaped


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
    parser.add_argument("--protocols", default="simple", help="pgbench -M values, comma-separated (simple,extended)")
    parser.add_argument("--transactions", type=int, default=0,
                        help="pgbench -t per client (a fixed amount of work) instead of --seconds")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"which rows, comma-separated: {','.join(TARGETS)} (pgbouncer: --pgbouncer-modes)")
    parser.add_argument("--pin-replicas", action="store_true", help="each replica's server on a CPU of its own")
    args = parser.parse_args()
    wanted = set(args.targets.split(","))
    protocols = args.protocols.split(",")
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
        if args.pin_replicas:  # before the targets start: the backends forked for them inherit it
            for i, replica in enumerate(cluster.replicas):
                pin_tree(replica.process.pid, {i % (os.cpu_count() or 1)})
        targets = []
        for key, name, replicas, extra in (
            ("tierproxy", "tierproxy", cluster.replicas, ""),
            ("statement", "tierproxy balance=statement", cluster.replicas, '[routing]\nbalance = "statement"\n'),
            ("replica", "tierproxy, 1 replica", cluster.replicas[:1], ""),
            ("primary", "tierproxy, primary only", [], ""),
        ):
            if key not in wanted:
                continue
            proxy = _dbproxy(cluster, replicas, workdir, f"dbproxy{len(closers)}", extra)
            closers.append(proxy)
            targets.append((name, [proxy.port], "app", "app-secret", [proxy.process.pid]))
        for mode in args.pgbouncer_modes.split(",") if "pgbouncer" in wanted else ():
            bouncer = start_pgbouncer(cluster, workdir, pgbouncer, pool_size=16, pool_mode=mode)
            closers.append(bouncer)
            name = "pgbouncer" if mode == "transaction" else f"pgbouncer {mode}"
            targets.append((name, [bouncer.port], bouncer.user, bouncer.password, [bouncer.process.pid]))
        if "direct" in wanted:  # pgbench straight at the primary: no proxy
            targets.append(("direct (primary)", [cluster.primary.port], cluster.user, cluster.password, []))
        if "direct-replica" in wanted:
            targets.append(("direct (1 replica)", [cluster.replicas[0].port], cluster.user, cluster.password, []))
        if "direct-2replicas" in wanted:  # two pgbench processes, 8 clients each, one per replica
            targets.append(("direct (2 replicas)", [r.port for r in cluster.replicas], cluster.user, cluster.password,
                            []))  # fmt: skip
        servers = [s.process.pid for s in (cluster.primary, *cluster.replicas)]

        tick = os.sysconf("SC_CLK_TCK")

        def run(name: str, ports: list[int], user: str, password: str, pids: list[int], protocol: str, seconds: int,
                show: bool) -> None:  # fmt: skip
            e = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable"}
            amount = ["-t", str(args.transactions)] if args.transactions and show else ["-T", str(seconds)]
            proxy0, pg0 = tree_cpu_seconds(pids), tree_cpu_seconds(servers)
            cs_proxy0, cs_pg0 = _switches(pids), _switches(servers)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            # 16 clients in all, split evenly over the ports, one pgbench process per port, all at once
            clients, threads = str(16 // len(ports)), str(max(1, 2 // len(ports)))
            procs = [subprocess.Popen([pgbench, args.mode, "-M", protocol, "-c", clients, "-j", threads, *amount, "-n",
                                       "-h", "127.0.0.1", "-p", str(port), "-U", user, "postgres"],
                                      env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                     for port in ports]  # fmt: skip
            outs = [p.communicate()[0] for p in procs]
            wall = time.monotonic() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proxy1, pg1 = tree_cpu_seconds(pids), tree_cpu_seconds(servers)
            cs_proxy1, cs_pg1 = _switches(pids), _switches(servers)
            lines = [ln for out in outs for ln in out.splitlines() if "actually processed" in ln]
            tps_lines = [ln for out in outs for ln in out.splitlines() if ln.startswith("tps = ")]
            if len(lines) != len(ports) or len(tps_lines) != len(ports):
                print(f"{name}: pgbench failed:\n{outs}", flush=True)
                return
            n = sum(int(ln.split(":")[1].split("/")[0]) for ln in lines)
            tps = sum(float(ln.split()[2]) for ln in tps_lines)
            bench = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            reaped = (cs_pg1[2] - cs_pg0[2]) / tick  # backends that exited during the run
            parts = (proxy1 - proxy0, pg1 - pg0 + reaped, bench)
            if show:
                us = [f"{p / n * 1e6:6.1f}" for p in parts]
                cs = (f"{(cs_proxy1[0] - cs_proxy0[0]) / n:.2f}/{(cs_proxy1[1] - cs_proxy0[1]) / n:.2f}",
                      f"{(cs_pg1[0] - cs_pg0[0]) / n:.2f}/{(cs_pg1[1] - cs_pg0[1]) / n:.2f}",
                      f"{(r1.ru_nvcsw - r0.ru_nvcsw) / n:.2f}/{(r1.ru_nivcsw - r0.ru_nivcsw) / n:.2f}")
                print(f"{name:26s} {protocol:8s} tps {tps:8.0f}   us per transaction: "
                      f"proxy {us[0]}  postgres {us[1]}  pgbench {us[2]}  all {sum(parts) / n * 1e6:6.1f}  "
                      f"cores {sum(parts) / wall:4.2f}   context switches per transaction (voluntary/involuntary): "
                      f"proxy {cs[0]}  postgres {cs[1]}  pgbench {cs[2]}", flush=True)  # fmt: skip

        for t in targets:
            for protocol in protocols:
                run(*t, protocol, 2, False)  # warm-up
        for i in range(args.rounds):
            print(f"-- round {i + 1}", flush=True)
            for t in targets:
                for protocol in protocols:
                    run(*t, protocol, args.seconds, True)
    finally:
        for c in reversed(closers):
            c.close()
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
