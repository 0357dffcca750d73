"""Benchmark a primary's death: the time to the first write on the new primary, and client errors.

Theory of operation
-------------------
1. One devstack Patroni cluster (proxy/devstack/patroni.py: etcd, three nodes of PostgreSQL 15,
   ttl 10 s, loop_wait 1 s, asynchronous replication) and, in front of it, both ways an
   application can keep one address for the primary:
   - "tierproxy": `tierproxy dbproxy` with `[topology] source = "patroni"` (the etcd keys, watched),
     holding writes while no leader is confirmed;
   - "haproxy": HAProxy in TCP mode with Patroni's REST health checks, the set-up Patroni's docs
     give: `option httpchk GET /primary`, `http-check expect status 200`, every node a server
     checked on its REST port, `default-server inter 3s fall 3 rise 2 on-marked-down
     shutdown-sessions` (`--haproxy-inter` and friends change them).
2. Each round: `--clients` writers per target, at the same time, loop `INSERT ... RETURNING
   inet_server_port()` (asyncpg, autocommit); a writer that gets an error counts it, reconnects
   after `--retry-ms` (an application's retry pause; without one a tight loop against a target
   that accepts and then fails every connection would count thousands) and goes on. Once every
   writer has written, the leader's postmaster is SIGKILLed (Patroni promotes another node at once:
   primary_start_timeout 0). Per target, from the kill: the time to the first write acknowledged
   by the new primary (its port), the errors clients got, and how many clients got any. The time
   Patroni's new leader became writable (asked of the server itself) is logged beside it.
3. The killed node rejoins as a replica (Patroni, pg_rewind) before the next round.
4. Per target the median over rounds (errors: the sum too). Output: a table on stdout and in
   table.txt, results.json with every round and machine info.

`measure()` is the pure part (unit-tested): from the kill time, the new primary's port, the
acknowledgements and the errors of one target, the round's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Binary, find_binary, format_table, machine_info, median
from bench.common import log as _log
from proxy.devstack.patroni import HOST, PatroniCluster, etcd_binary, patroni_binary, start_patroni_cluster
from proxy.devstack.patroni_dbproxy import start_patroni_dbproxy
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import DevstackError, ManagedProcess

__all__ = ["add_arguments", "measure", "run"]

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("tierproxy", "haproxy")
# The smoke's HAProxy checks every second and turns at once (fall 2, rise 1): the smoke checks the
# harness, and Patroni's documented 3 s x 3 down, 2 up, only made it wait about 9 s for HAProxy.
SMOKE = {"rounds": 1, "clients": 2, "haproxy": {"inter": "1s", "fall": 2, "rise": 1}}
DEADLINE = 120.0
WRITE_TIMEOUT = 20.0
PASSWORD = "app-secret"

COLUMNS = (
    ("target", "target", "s"),
    ("first_write_s", "first write on new primary s (median)", ".2f"),
    ("first_write_max_s", "max s", ".2f"),
    ("errors", "client errors (median)", ".0f"),
    ("errors_total", "errors (sum)", "d"),
    ("clients_with_errors", "clients with errors (median)", ".0f"),
    ("patroni_writable_s", "Patroni leader writable s (median)", ".2f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="primary kills (5)")
    parser.add_argument("--clients", type=int, default=8, help="writers per target (8)")
    parser.add_argument("--retry-ms", type=int, default=100, help="a writer's pause after an error, ms (100)")
    parser.add_argument("--haproxy-inter", default="3s", help="HAProxy check interval (3s, Patroni's docs)")
    parser.add_argument("--haproxy-fall", type=int, default=3, help="failed checks before down (3)")
    parser.add_argument("--haproxy-rise", type=int, default=2, help="passed checks before up (2)")
    parser.add_argument("--smoke", action="store_true", help="1 round, 2 clients, HAProxy inter 1s fall 2 rise 1: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/failover-<timestamp>/)")


def measure(kill_at: float, new_port: int, acks: Sequence[tuple[float, int]], errors: Sequence[float],
            clients_with_errors: int) -> dict[str, Any]:  # fmt: skip
    """One target's figures for one kill: `acks` are (monotonic time, server port) of acknowledged
    writes, `errors` the times of client errors. `first_write_s` is None when no write reached
    the new primary."""
    first = min((t for t, port in acks if port == new_port and t >= kill_at), default=None)
    return {
        "first_write_s": None if first is None else round(first - kill_at, 3),
        "errors": sum(1 for t in errors if t >= kill_at),
        "clients_with_errors": clients_with_errors,
        "acked_after_kill": sum(1 for t, _ in acks if t >= kill_at),
        "acked_elsewhere_after_kill": sum(1 for t, port in acks if t >= kill_at and port != new_port),
    }


def haproxy_config(port: int, stats_port: int, cluster: PatroniCluster, inter: str, fall: int, rise: int) -> str:
    servers = "\n".join(f"    server {n.name} {HOST}:{n.port} check port {n.api_port}" for n in cluster.nodes)
    return f"""# generated by bench/failover.py: HAProxy in front of Patroni as Patroni's docs set it up
global
    maxconn 1000
defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 2s
listen stats
    mode http
    bind {HOST}:{stats_port}
    stats enable
    stats uri /
listen primary
    bind {HOST}:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter {inter} fall {fall} rise {rise} on-marked-down shutdown-sessions
{servers}
"""


class Writer:
    def __init__(self, dsn: str, retry: float) -> None:
        self.dsn, self.retry = dsn, retry
        self.acks: list[tuple[float, int]] = []
        self.errors: list[float] = []
        self.messages: list[str] = []

    async def run(self, stop: asyncio.Event, base: int) -> None:
        import asyncpg

        conn = None
        i = base
        while not stop.is_set():
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, timeout=WRITE_TIMEOUT)
                i += 1
                port = await conn.fetchval("INSERT INTO bench_failover VALUES ($1) RETURNING inet_server_port()", i,
                                           timeout=WRITE_TIMEOUT)  # fmt: skip
                self.acks.append((time.monotonic(), port))
            except Exception as exc:  # noqa: BLE001 - every client-visible failure counts as an error
                self.errors.append(time.monotonic())
                self.messages.append(f"{type(exc).__name__}: {exc}"[:200])
                if conn is not None:
                    conn.terminate()
                    conn = None
                await asyncio.sleep(self.retry)
        if conn is not None:
            conn.terminate()


async def _round(cluster: PatroniCluster, dsns: dict[str, str], clients: int, retry: float) -> dict[str, Any]:
    import asyncpg

    await asyncio.to_thread(cluster.wait_healthy, DEADLINE, len(cluster.nodes))
    old = await asyncio.to_thread(cluster.wait_leader, DEADLINE)
    conn = await asyncpg.connect(cluster.node(old).dsn(), timeout=DEADLINE)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_failover; CREATE TABLE bench_failover (id bigint PRIMARY KEY)")
    finally:
        await conn.close()
    writers = {t: [Writer(dsn, retry) for _ in range(clients)] for t, dsn in dsns.items()}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop, 10**9 * (k + 1) + 10**7 * j))
             for k, ws in enumerate(writers.values()) for j, w in enumerate(ws)]  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while not all(w.acks for ws in writers.values() for w in ws):
            if time.monotonic() > deadline:
                raise DevstackError("writers did not all write before the kill: "
                                    + "; ".join(m for ws in writers.values() for w in ws for m in w.messages[-1:]))
            await asyncio.sleep(0.05)
        kill_at = time.monotonic()
        if cluster.node(old).kill_postmaster() is None:
            raise DevstackError(f"{old} has no postmaster to kill")
        new = await asyncio.to_thread(cluster.wait_leader, DEADLINE, not_name=old)
        writable_at = time.monotonic()
        new_port = cluster.node(new).port
        deadline = time.monotonic() + DEADLINE
        while not all(any(p == new_port for _, p in w.acks) for ws in writers.values() for w in ws):
            if time.monotonic() > deadline:
                break  # reported: a target whose writers never reached the new primary
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    out: dict[str, Any] = {"old": old, "new": new, "patroni_writable_s": round(writable_at - kill_at, 3), "targets": {}}
    for target, ws in writers.items():
        acks = sorted(a for w in ws for a in w.acks)
        errors = sorted(e for w in ws for e in w.errors)
        with_errors = sum(1 for w in ws if any(e >= kill_at for e in w.errors))
        out["targets"][target] = measure(kill_at, new_port, acks, errors, with_errors) | {
            "sample_errors": sorted({m for w in ws for m in w.messages})[:5]}
    return out


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return resp.status == 200
    except OSError:
        return False


def _summarise(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        figures = [r["targets"][target] for r in rounds if target in r["targets"]]
        if not figures:
            continue
        firsts = [f["first_write_s"] for f in figures]
        rows.append({"target": target, "first_write_s": median(firsts),
                     "first_write_max_s": max((v for v in firsts if v is not None), default=None),
                     "errors": median(f["errors"] for f in figures), "errors_total": sum(f["errors"] for f in figures),
                     "clients_with_errors": median(f["clients_with_errors"] for f in figures),
                     "patroni_writable_s": median(r["patroni_writable_s"] for r in rounds),
                     "rounds": len(figures), "missed": sum(1 for v in firsts if v is None)})  # fmt: skip
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"rounds": args.rounds, "clients": args.clients, "retry_ms": args.retry_ms, "smoke": args.smoke,
                "haproxy": {"inter": args.haproxy_inter, "fall": args.haproxy_fall, "rise": args.haproxy_rise}}  # fmt: skip
    if args.smoke:
        settings.update(SMOKE)
    bins = {"haproxy": find_binary("haproxy", "haproxy"), "patroni": Binary("patroni", "patroni", patroni_binary()),
            "etcd": Binary("etcd", "etcd-server", etcd_binary())}  # fmt: skip
    for b in bins.values():
        if b.path is None:
            print(f"cannot benchmark: {b.missing_message}", file=sys.stderr)
            return 2
    out = (args.out or REPO / "bench" / "results" / f"failover-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tierproxy-bench-failover-"))
    machine = machine_info(bins.values(), REPO)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rounds: list[dict[str, Any]] = []
    problems: list[str] = []
    cluster = proxy = haproxy = None
    locks = []
    _log(f"results -> {out}; {machine['note']}")
    try:
        cluster = start_patroni_cluster(3, log_dir=workdir, scope="bench", timeout=DEADLINE)
        proxy = start_patroni_dbproxy(cluster, log_dir=workdir, users={"app": PASSWORD}, source="etcd",
                                      name="dbproxy", hold_timeout=60.0)  # fmt: skip
        locks = [allocate_port(HOST), allocate_port(HOST)]
        cfg = workdir / "haproxy.cfg"
        h = settings["haproxy"]
        cfg.write_text(haproxy_config(locks[0].port, locks[1].port, cluster, h["inter"], h["fall"], h["rise"]))
        for lock in locks:
            lock.release()
        assert bins["haproxy"].path is not None
        haproxy = ManagedProcess([bins["haproxy"].path, "-f", str(cfg), "-db"], name="haproxy", log_dir=workdir)
        haproxy.wait_ready(lambda: _http_ok(f"http://{HOST}:{locks[1].port}/"), 30.0)
        su = f"{cluster.superuser}:{cluster.password}"
        dsns = {"tierproxy": proxy.dsn("app", "postgres"),
                "haproxy": f"postgresql://{su}@{HOST}:{locks[0].port}/postgres"}  # fmt: skip
        for n in range(1, settings["rounds"] + 1):
            r = asyncio.run(_round(cluster, dsns, settings["clients"], settings["retry_ms"] / 1000))
            r["round"] = n
            rounds.append(r)
            for target, f in r["targets"].items():
                _log(f"round {n} {r['old']} -> {r['new']} {target}: first write on the new primary "
                     f"{f['first_write_s']} s, {f['errors']} errors ({f['clients_with_errors']} clients); "
                     f"Patroni writable {r['patroni_writable_s']} s")  # fmt: skip
                if f["first_write_s"] is None:
                    problems.append(f"round {n} {target}: no write reached the new primary {r['new']}")
            if not proxy.process.running or not haproxy.running:
                problems.append(f"a target died in round {n}")
                break
    except DevstackError as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        for part in (haproxy, proxy, cluster):
            if part is not None:
                try:
                    part.close() if not isinstance(part, ManagedProcess) else part.terminate(10.0)
                except Exception as exc:  # noqa: BLE001 - one failing close must not skip the others
                    _log(f"closing {part!r}: {exc}")
        for log in workdir.glob("*.log"):
            shutil.copy(log, out / log.name)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = _summarise(rounds)
    table = format_table(rows, COLUMNS)
    h = settings["haproxy"]
    header = (f"failover benchmark: SIGKILL of the primary's postmaster under {settings['clients']} writers per "
              f"target, {len(rounds)} round(s); Patroni ttl 10 s, loop_wait 1 s; HAProxy httpchk GET /primary "
              f"inter {h['inter']} fall {h['fall']} rise {h['rise']} on-marked-down shutdown-sessions; writers retry "
              f"after {settings['retry_ms']} ms\n{machine['note']}")  # fmt: skip
    print(header)
    print(table)
    for p in problems:
        print(f"NOTE: {p}")
    (out / "table.txt").write_text(header + "\n" + table + "\n")
    results = {"benchmark": "failover", "command": ["python", "-m", "bench", *argv], "started": started,
               "settings": settings, "machine": machine, "problems": problems, "summary": rows,
               "rounds": rounds, "table": table}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _log(f"wrote {out / 'results.json'}, {out / 'table.txt'}")
    return 1 if problems else 0
