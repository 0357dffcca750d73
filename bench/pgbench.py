"""pgbench runs shared by the PostgreSQL benchmarks (`bench/dbproxy.py`, `bench/shard.py`).

A `Target` is somewhere pgbench connects (a proxy, a peer, or the server itself: "direct"), with
the pids whose process trees are the proxy's CPU. `run_pgbench` runs pgbench once against a
target and parses its report, with the proxy's CPU seconds around the run (common.py's
`tree_cpu_seconds`). `run_rounds` runs a warm-up per target, then `rounds` rounds in which every
(workload, target) pair runs once in a fixed order, so slow drift of the machine hits all of them
alike. `summarise` gives per (workload, target) the medians over rounds, failed transactions summed
(never hidden), ratios to peers per round (common.py's `round_ratio`) and, against a baseline,
the latency a target adds per round (the median of its latency minus the baseline's in the same
round). `write_report` prints the table and writes table.txt, results.json and the PNG.
`choose`, `set_up`, `initialise` and `tear_down` are the ends of such a benchmark's run: the
--targets/--workloads it asked for; pgbench and the peers found, the results and work directories,
the machine described; `pgbench -i` on the cluster; and the processes, cluster and work directory
it leaves (logs kept beside the results).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

from bench import plot
from bench.common import (
    Binary,
    find_binary,
    format_table,
    log,
    machine_counters,
    machine_info,
    median,
    report,
    round_ratio,
    tree_cpu_seconds,
)
from proxy.devstack.process import DevstackError

__all__ = ["Target", "choose", "initialise", "log", "parse_pgbench", "round_difference", "run_pgbench", "run_rounds",
           "set_up", "summarise", "tear_down", "write_report"]


class Target:
    def __init__(self, name: str, description: str, port: int, user: str, password: str, pids: list[int],
                 alive: Callable[[], bool]) -> None:  # fmt: skip
        self.name, self.description, self.port = name, description, port
        self.user, self.password, self.pids, self.alive = user, password, pids, alive


_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


def parse_pgbench(text: str) -> dict[str, Any]:
    """TPS, average latency, processed and failed transactions from pgbench's report."""
    def grab(rx: re.Pattern[str], cast: Any) -> Any:
        m = rx.search(text)
        return cast(m.group(1)) if m else None

    return {"tps": grab(_TPS, float), "latency_ms": grab(_LAT, float), "processed": grab(_DONE, int),
            "failed": grab(_FAILED, int), "aborted": "aborted" in text or "error:" in text}  # fmt: skip


def run_pgbench(pgbench: str, target: Target, flags: Sequence[str], clients: int, seconds: int,
                server_pids: Sequence[int] = ()) -> dict[str, Any]:  # fmt: skip
    """One `pgbench FLAGS -c clients -j 2 -T seconds` at `target` (database postgres, no TLS).
    With `server_pids` (the PostgreSQL servers' postmasters), also what their process trees spent
    per transaction: behind a proxy that reads from replicas on the same cores, PostgreSQL's own
    share moves with how many servers are busy, not only the proxy's."""
    env = {**os.environ, "PGPASSWORD": target.password, "PGSSLMODE": "disable"}
    argv = [pgbench, *flags, "-c", str(clients), "-j", "2", "-T", str(seconds), "-n",
            "-h", "127.0.0.1", "-p", str(target.port), "-U", target.user, "postgres"]  # fmt: skip
    cpu0 = tree_cpu_seconds(target.pids) if target.pids else None
    servers0 = tree_cpu_seconds(server_pids, reaped=True) if server_pids else None
    machine0 = machine_counters()
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=seconds + 120)
    machine1 = machine_counters()
    servers1 = tree_cpu_seconds(server_pids, reaped=True) if server_pids else None
    cpu1 = tree_cpu_seconds(target.pids) if target.pids else None
    result = parse_pgbench(done.stdout + done.stderr)
    processed = result["processed"]
    # PostgreSQL's CPU (live processes and the backends that exited, through their postmaster) and the whole
    # machine's context switches per transaction and idle CPU seconds (common.py machine_counters).
    if servers0 is not None and servers1 is not None:
        result["postgres_cpu_s"] = round(servers1 - servers0, 3)
        result["postgres_us_per_txn"] = (servers1 - servers0) * 1e6 / processed if processed else None
    result["machine_ctxt_per_txn"] = (machine1["ctxt"] - machine0["ctxt"]) / processed if processed else None
    result["machine_idle_s"] = round(machine1["idle_s"] - machine0["idle_s"], 2)
    result["exit"] = done.returncode
    result["proxy_cpu_s"] = round(cpu1 - cpu0, 3) if cpu0 is not None and cpu1 is not None else None
    if result["proxy_cpu_s"] and result["processed"]:
        result["tps_per_cpu_s"] = result["processed"] / result["proxy_cpu_s"]
    else:
        result["tps_per_cpu_s"] = None
    result["output_tail"] = (done.stdout + done.stderr)[-1500:]
    return result


def run_rounds(pgbench: str, targets: Sequence[Target], workloads: Mapping[str, Sequence[str]],
               settings: Mapping[str, Any], warmup_flags: Sequence[str], runs: list[dict[str, Any]],
               problems: list[str], *, run_one: Callable[[Target, Sequence[str], int], dict[str, Any]] | None = None,
               server_pids: Sequence[int] = (),
               describe: Callable[[dict[str, Any]], str] = lambda r: f"proxy CPU {r['proxy_cpu_s']}") -> None:  # fmt: skip
    """Warm-up per target (`warmup_flags`, `settings["warmup_s"]`), then the rounds; every run is
    appended to `runs`, every failure (pgbench exit, failed transactions, a dead target) to
    `problems`. A measured run is `run_one(target, flags, seconds)` (by default `run_pgbench`
    with the time it started); `describe` ends its log line. With `settings["smoke"]` the targets
    of one workload run at the same time (each still gets one pgbench at a time): a smoke checks
    the harness, not the speed, and its 1 s runs one after the other were most of its time.
    `server_pids`: the PostgreSQL postmasters whose CPU each default run also reads (run_pgbench)."""
    def stamped(t: Target, flags: Sequence[str], seconds: int) -> dict[str, Any]:
        return {"started": time.time(), **run_pgbench(pgbench, t, flags, settings["clients"], seconds, server_pids)}

    one = run_one or stamped
    for t in targets:
        if settings["warmup_s"] > 0:
            run_pgbench(pgbench, t, warmup_flags, settings["clients"], settings["warmup_s"])
    seconds, smoke = settings["duration_s"], bool(settings.get("smoke"))
    for rnd in range(1, settings["rounds"] + 1):
        for w, flags in workloads.items():
            at_once: dict[str, dict[str, Any]] = {}
            if smoke:
                alive = [t for t in targets if t.alive()]
                with ThreadPoolExecutor(max_workers=len(alive) or 1) as pool:
                    at_once = dict(zip([t.name for t in alive], pool.map(one, alive, repeat(flags), repeat(seconds))))
            for t in targets:
                if smoke and t.name not in at_once or not smoke and not t.alive():
                    continue
                got = at_once[t.name] if smoke else one(t, flags, seconds)
                r = {"round": rnd, "workload": w, "target": t.name, **got}
                runs.append(r)
                log(f"round {rnd} {w} {t.name}: {r['tps'] or 0:,.0f} TPS, failed {r['failed']}, {describe(r)}")
                if r["exit"] != 0 or r["failed"] or r["tps"] is None:
                    problems.append(f"{t.name} {w} round {rnd}: pgbench exit {r['exit']}, failed "
                                    f"{r['failed']}:\n{r['output_tail'][-600:]}")  # fmt: skip
                if not t.alive():
                    problems.append(f"{t.name} died during round {rnd}")


def round_difference(runs: list[dict[str, Any]], target: str, base: str, key: str) -> float | None:
    """Median over rounds of `target`'s `key` minus `base`'s in the same round (None without a
    pair): e.g. the latency a proxy adds over going direct."""
    value = {(r.get("round"), r["target"]): r.get(key) for r in runs}
    return median(v - value[(rnd, base)] for (rnd, name), v in value.items()
                  if name == target and v is not None and value.get((rnd, base)) is not None)  # fmt: skip


def summarise(runs: list[dict[str, Any]], targets: Sequence[str], workloads: Sequence[str], *,
              ratios_to: Sequence[str] = (), cpu_ratio_to: str | None = None,
              added_over: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (workload, target): medians, failed summed; `vs_<peer>` (TPS ratio per round)
    for each of `ratios_to`, `cpu_vs_<peer>` for `cpu_ratio_to` (TPS per proxy CPU-second), and
    with `added_over` (a baseline such as "direct") `added_latency_ms`."""
    rows = []
    for w in workloads:
        mine_w = [r for r in runs if r["workload"] == w]
        by_target = {}
        for t in targets:
            mine = [r for r in mine_w if r["target"] == t]
            if not mine:
                continue
            by_target[t] = {
                "workload": w, "target": t, "tps": median(r["tps"] for r in mine),
                "latency_ms": median(r["latency_ms"] for r in mine),
                "failed": sum((r["failed"] or 0) for r in mine),
                "proxy_cpu_s": median(r["proxy_cpu_s"] for r in mine),
                "tps_per_cpu_s": median(r["tps_per_cpu_s"] for r in mine),
                "postgres_us_per_txn": median(r.get("postgres_us_per_txn") for r in mine),
            }  # fmt: skip
        for row in by_target.values():
            for peer in ratios_to:
                row[f"vs_{peer}"] = round_ratio(mine_w, row["target"], peer, "tps")
            if cpu_ratio_to is not None:
                base_cpu = by_target.get(cpu_ratio_to, {}).get("tps_per_cpu_s")
                row[f"cpu_vs_{cpu_ratio_to}"] = (row["tps_per_cpu_s"] / base_cpu
                                                 if base_cpu and row["tps_per_cpu_s"] else None)  # fmt: skip
            if added_over is not None:
                row["added_latency_ms"] = round_difference(mine_w, row["target"], added_over, "latency_ms")
            rows.append(row)
    return rows


def write_report(out: Path, *, benchmark: str, header: str, rows: list[dict[str, Any]],
                 columns: Sequence[tuple[str, str, str]], panels: Sequence[tuple[str, ...]], title: str,
                 results: dict[str, Any], problems: Sequence[str], missing: Sequence[str]) -> None:  # fmt: skip
    """Print the table (and NOTE/SKIPPED lines), write table.txt, `<benchmark>.png` (when
    matplotlib is there) and results.json (`results` plus summary, table and png)."""
    table = format_table(rows, columns)
    report(out, header + "\n" + table + "\n", problems, missing)
    png = out / f"{benchmark}.png"
    plotted = plot.grouped_bar_chart(rows, png, group="workload", series="target", panels=panels, title=title)
    body = {"benchmark": benchmark, **results, "skipped": list(missing), "problems": list(problems),
            "summary": rows, "table": table, "png": png.name if plotted else None}  # fmt: skip
    (out / "results.json").write_text(json.dumps(body, indent=2) + "\n")
    log(f"wrote {out / 'results.json'}, {out / 'table.txt'}" + (f", {png}" if plotted else ""))


def choose(targets: str, workloads: str, known_targets: Iterable[str], known_workloads: Iterable[str],
           ) -> tuple[list[str], list[str]] | None:  # fmt: skip
    """The comma-separated --targets and --workloads as lists; None, with the choices on stderr,
    when either is empty or names one that is not known."""
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    chosen = [w.strip() for w in workloads.split(",") if w.strip()]
    known_t, known_w = list(known_targets), list(known_workloads)
    if set(wanted) - set(known_t) or set(chosen) - set(known_w) or not wanted or not chosen:
        print(f"choose targets from {', '.join(known_t)} and workloads from {', '.join(known_w)}", file=sys.stderr)
        return None
    return wanted, chosen


class RunSetup(NamedTuple):
    bins: dict[str, Binary]  # pgbench and the peers, found or not
    pgbench: str
    out: Path  # results
    workdir: Path  # configs, sockets and logs of this run
    machine: dict[str, Any]
    started: str
    missing: list[str]  # why wanted peers are skipped
    wanted: list[str]  # the targets asked for (--targets)
    workloads: list[str]  # the workloads asked for (--workloads)


def set_up(name: str, peers: Mapping[str, Binary], args: Any, known_targets: Iterable[str],
           known_workloads: Iterable[str], repo: Path) -> RunSetup | None:  # fmt: skip
    """Start of a run: the --targets and --workloads of `args` chosen (`choose`); None (having said
    why) when they are not known or pgbench is missing; peers that are wanted but missing are
    logged and skipped; `args.out` defaults to bench/results/<name>-<timestamp>/."""
    chosen = choose(args.targets, args.workloads, known_targets, known_workloads)
    if chosen is None:
        return None
    wanted, workloads = chosen
    bins = {"pgbench": find_binary("pgbench", "postgresql-client"), **peers}
    pgbench = bins["pgbench"].path
    if pgbench is None:
        print(f"cannot benchmark: {bins['pgbench'].missing_message}", file=sys.stderr)
        return None
    missing = [b.missing_message for key, b in bins.items() if b.path is None and key in wanted]
    for message in missing:
        log(f"skipping peer: {message}")
    out = (args.out or repo / "bench" / "results" / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"tierproxy-bench-{name}-"))
    machine = machine_info(bins.values(), repo)
    log(f"results -> {out}; {machine['note']}")
    return RunSetup(bins, pgbench, out, workdir, machine, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), missing,
                    wanted, workloads)  # fmt: skip


def initialise(pgbench: str, cluster: Any, scale: int) -> None:
    """`pgbench -i -s scale` on the cluster's primary (database postgres); DevstackError, with
    pgbench's stderr, when it fails."""
    init = subprocess.run([pgbench, "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(cluster.primary.port),
                           "-U", cluster.user, "postgres"], check=False, env={**os.environ, **cluster.client_env()},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if init.returncode != 0:
        raise DevstackError(f"pgbench -i failed:\n{init.stderr}")


def tear_down(closers: Sequence[Any], cluster: Any, workdir: Path, out: Path) -> None:
    """Stop what a run started (last started first, then the PostgreSQL cluster), keep the logs of
    its work directory in `out`, and remove the work directory."""
    for c in reversed(closers):
        c.close()
    if cluster is not None:
        cluster.close()
    for path in workdir.glob("*.log"):
        shutil.copy(path, out / path.name)
    for path in workdir.glob("*/*.log"):  # a target's own directory (bench dbproxy's tierproxy-statement)
        if path.parent.name != "pg":
            shutil.copy(path, out / f"{path.parent.name}-{path.name}")
    shutil.rmtree(workdir, ignore_errors=True)
