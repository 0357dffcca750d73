"""Benchmark tierproxy geodns against dnsmasq and PowerDNS (GeoIP backend) with dnsperf.

Theory of operation
-------------------
1. Three authoritative servers for the same zone on loopback ports (bench/dnspeers.py says how each
   is configured): tierproxy geodns (one worker; geo policy per name, ECS, health checks on),
   PowerDNS 4 with its GeoIP backend (a .mmdb of the same networks) and dnsmasq (authoritative, no
   geo). Before any load, each answers `www` from the source address (east) and with ECS
   203.0.113.0/24 (west for the geo servers): a wrong answer is reported as a problem.
2. Workloads, each `dnsperf -c 4 -q 100 -l <duration>` from 127.0.0.1:
   "one name": `www A` over and over, no EDNS;
   "one name + ECS": the same with an EDNS Client Subnet option (203.0.113.0/24, region west);
   "N names + ECS": `n0`..`n<N-1>` in turn (N = --names, 1,000), each a geo name of its own, so a
   server answers from a cache only if its cache holds every name (the issue's "geo policies, ECS
   and health on" case). dnsperf cannot vary the ECS subnet per query; the distinct names are what
   varies.
3. A warm-up per target (not recorded), then `--rounds` rounds; in each round every (workload,
   target) pair runs once, in a fixed order, so drift of the machine hits all alike. Around each run
   the server's CPU seconds (utime + stime of its process tree, /proc) are read: queries per server
   CPU-second is what a server costs, less sensitive than QPS to dnsperf and the server sharing the
   2 cores. dnsperf's own CPU is the reaped child's rusage.
4. Per (workload, target) the median over rounds (lost queries and non-NOERROR answers are summed,
   never hidden). Ratios to dnsmasq and to PowerDNS: per round, then the median of those
   (`round_ratio`). dnsperf reports average, min, max and standard deviation of latency (no
   percentiles in 2.10): the table has the average and the max. Output: a table on stdout and in
   table.txt, results.json with every run (dnsperf's text included) and machine info, a PNG chart,
   the generated configs and the server logs.

Without dnsperf nothing can run (exit status 2). A peer whose binary is missing, or tierproxy geodns
before it exists in this checkout, is skipped with the reason (the Debian package for a binary). A
server that fails to start or dies, a wrong answer, lost queries or other rcodes make the exit
status 1, after the report of what did run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode

from bench import plot
from bench.common import (
    find_binary,
    format_table,
    machine_info,
    median,
    report,
    round_ratio,
    run_timed,
    tree_cpu_seconds,
)
from bench.common import log as _log
from bench.dnspeers import (
    EAST,
    ECS_NET,
    WEST,
    ZONE,
    DnsServer,
    DnsStack,
    query_a,
    tierproxy_geodns_missing,
)
from bench.servers import REPO
from proxy.devstack.process import DevstackError

__all__ = ["add_arguments", "parse_dnsperf", "run"]

TARGETS = ("tierproxy", "dnsmasq", "powerdns")
WORKLOADS = ("one name", "one name + ECS", "N names + ECS")
SMOKE = {"duration": 1.0, "warmup": 0.0, "rounds": 1, "names": 100}
CLIENTS, OUTSTANDING = 4, 100
# dnsperf's -E code:hex-value. ECS (option 8): family 1, source prefix 24, scope 0, 203.0.113.
ECS_OPTION = "8:" + "0001" + "18" + "00" + "cb0071"

COLUMNS = (
    ("workload", "workload", "s"),
    ("target", "target", "s"),
    ("qps", "QPS", ",.0f"),
    ("latency_avg_ms", "lat avg ms", ".3f"),
    ("latency_max_ms", "lat max ms", ".2f"),
    ("lost", "lost", "d"),
    ("other_rcodes", "not NOERROR", "d"),
    ("server_cpu_s", "server CPU s", ".2f"),
    ("qps_per_cpu_s", "queries/CPU-s", ",.0f"),
    ("vs_dnsmasq", "QPS vs dnsmasq", ".2f"),
    ("vs_powerdns", "QPS vs PowerDNS", ".2f"),
    ("cpu_vs_dnsmasq", "q/CPU vs dnsmasq", ".2f"),
    ("cpu_vs_powerdns", "q/CPU vs PowerDNS", ".2f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target (2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--names", type=int, default=1000, help="distinct names of the 'N names' workload (1000)")
    parser.add_argument("--workers", type=int, default=1, help="tierproxy geodns processes (workers = N, 1)")
    parser.add_argument("--regions", choices=("cidr", "mmdb"), default="cidr",
                        help="tierproxy's client regions: its CIDR table (cidr) or PowerDNS's .mmdb (mmdb)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, 1 round, 100 names: checks the harness only")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/geodns-<timestamp>/)")


_NUM = r"([0-9.]+)"


def parse_dnsperf(text: str) -> dict[str, Any]:
    """Counts, QPS and latency (ms) from dnsperf 2.x's "Statistics:" report; None where absent."""
    def grab(pattern: str, cast: Any = float) -> Any:
        m = re.search(pattern, text, re.MULTILINE)
        return cast(m.group(1)) if m else None

    rcodes = {}
    line = re.search(r"^\s*Response codes:\s*(.*)$", text, re.MULTILINE)
    if line:
        rcodes = {code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+) \(", line.group(1))}
    lat = re.search(rf"Average Latency \(s\):\s*{_NUM} \(min {_NUM}, max {_NUM}\)", text)
    std = grab(rf"Latency StdDev \(s\):\s*{_NUM}")
    return {
        "sent": grab(r"Queries sent:\s*(\d+)", int), "completed": grab(r"Queries completed:\s*(\d+)", int),
        "lost": grab(r"Queries lost:\s*(\d+)", int), "rcodes": rcodes,
        "run_time_s": grab(rf"Run time \(s\):\s*{_NUM}"), "qps": grab(rf"Queries per second:\s*{_NUM}"),
        "latency_avg_ms": float(lat.group(1)) * 1e3 if lat else None,
        "latency_min_ms": float(lat.group(2)) * 1e3 if lat else None,
        "latency_max_ms": float(lat.group(3)) * 1e3 if lat else None,
        "latency_stddev_ms": std * 1e3 if std is not None else None,
    }  # fmt: skip


def _versions(bins: dict[str, Any]) -> dict[str, str | None]:
    """Version lines of the DNS programs (`-v` would make dnsperf send queries and pdns_server start)."""
    flags = {"dnsperf": "-h", "dnsmasq": "--version", "powerdns": "--version"}
    found: dict[str, str | None] = {}
    for key, b in bins.items():
        found[b.name] = None
        if b.path is not None:
            try:
                done = subprocess.run([b.path, flags[key]], check=False, capture_output=True, text=True, timeout=10,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
            except (OSError, subprocess.TimeoutExpired):
                continue
            m = re.search(r"(PowerDNS Authoritative Server \S+|Dnsmasq version \S+|Version \S+)",
                          done.stdout + done.stderr)  # fmt: skip
            found[b.name] = m.group(1) if m else None
    return found


def _query_files(workdir: Path, count: int) -> dict[str, tuple[Path, list[str]]]:
    one = workdir / "queries-one.txt"
    one.write_text(f"www.{ZONE} A\n")
    many = workdir / f"queries-{count}.txt"
    many.write_text("".join(f"n{i}.{ZONE} A\n" for i in range(count)))
    return {"one name": (one, []), "one name + ECS": (one, ["-E", ECS_OPTION]),
            "N names + ECS": (many, ["-E", ECS_OPTION])}  # fmt: skip


def _dnsperf(dnsperf: str, server: DnsServer, query_file: Path, flags: list[str], seconds: float) -> dict[str, Any]:
    argv = [dnsperf, "-s", "127.0.0.1", "-p", str(server.port), "-d", str(query_file), "-c", str(CLIENTS),
            "-q", str(OUTSTANDING), "-l", f"{seconds:g}", "-t", "5", *flags]  # fmt: skip
    cpu0 = tree_cpu_seconds(server.pids)
    done, _, client_cpu = run_timed(argv, seconds + 60)
    server_cpu = tree_cpu_seconds(server.pids) - cpu0
    text = done.stdout + done.stderr
    result = parse_dnsperf(text)
    completed = result["completed"] or 0
    result.update({
        "exit": done.returncode, "argv": argv, "server_cpu_s": round(server_cpu, 3),
        "client_cpu_s": round(client_cpu, 3),
        "qps_per_cpu_s": completed / server_cpu if server_cpu > 0 else None,
        "other_rcodes": sum(n for code, n in result["rcodes"].items() if code != "NOERROR"),
        "text": text[-3000:],
    })  # fmt: skip
    return result


def _check_answers(server: DnsServer) -> dict[str, Any]:
    """What `www` answers from the source address and with ECS, and whether that is right."""
    want_ecs = [WEST] if server.geo else [EAST]
    seen = {}
    for label, ecs, want in (("source 127.0.0.1", None, [EAST]), (f"ECS {ECS_NET}", ECS_NET, want_ecs)):
        try:
            rcode, addresses = query_a(server.port, "www", ecs)
            seen[label] = {"rcode": dns.rcode.to_text(rcode), "answer": addresses, "expected": want,
                           "ok": rcode == dns.rcode.NOERROR and addresses == want}  # fmt: skip
        except (dns.exception.DNSException, OSError) as exc:  # a timeout, a bad reply: reported, not fatal
            seen[label] = {"error": repr(exc), "expected": want, "ok": False}
    return seen


def _summarise(runs: list[dict[str, Any]], targets: list[str], workloads: list[str]) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        mine_w = [r for r in runs if r["workload"] == w]
        by_target = {}
        for t in targets:
            mine = [r for r in mine_w if r["target"] == t]
            if mine:
                by_target[t] = {
                    "workload": w, "target": t, "runs": len(mine), "qps": median(r["qps"] for r in mine),
                    "latency_avg_ms": median(r["latency_avg_ms"] for r in mine),
                    "latency_max_ms": median(r["latency_max_ms"] for r in mine),
                    "latency_stddev_ms": median(r["latency_stddev_ms"] for r in mine),
                    "lost": sum(r["lost"] or 0 for r in mine), "other_rcodes": sum(r["other_rcodes"] for r in mine),
                    "server_cpu_s": median(r["server_cpu_s"] for r in mine),
                    "qps_per_cpu_s": median(r["qps_per_cpu_s"] for r in mine),
                    "client_cpu_s": median(r["client_cpu_s"] for r in mine),
                }  # fmt: skip
        for row in by_target.values():
            for peer, key in (("dnsmasq", "dnsmasq"), ("powerdns", "powerdns")):
                row[f"vs_{key}"] = round_ratio(mine_w, row["target"], peer, "qps")
                row[f"cpu_vs_{key}"] = round_ratio(mine_w, row["target"], peer, "qps_per_cpu_s")
            rows.append(row)
    return rows


def _start(stack: DnsStack, wanted: list[str], bins: dict[str, Any], settings: dict[str, Any],
           problems: list[str]) -> list[DnsServer]:  # fmt: skip
    starters = {"tierproxy": lambda: stack.start_tierproxy(settings["workers"], settings["regions"]),
                "dnsmasq": lambda: stack.start_dnsmasq(bins["dnsmasq"].path),
                "powerdns": lambda: stack.start_pdns(bins["powerdns"].path)}  # fmt: skip
    servers = []
    for name in wanted:
        try:
            servers.append(starters[name]())
        except (DevstackError, OSError) as exc:
            problems.append(f"{name} failed to start: {exc}")
            _log(problems[-1])
    return servers


def _keep_artifacts(workdir: Path, out: Path) -> None:
    for src in [*workdir.glob("*.toml"), *workdir.glob("*.conf"), *workdir.glob("pdns/*.conf"),
                *workdir.glob("pdns/*.yaml")]:  # fmt: skip
        (out / "configs").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / "configs" / src.name)
    for src in workdir.glob("logs/*.log"):
        (out / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / "logs" / src.name)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds, "names": args.names,
                "clients": CLIENTS, "outstanding": OUTSTANDING, "ecs": ECS_NET, "smoke": args.smoke,
                "workers": args.workers, "regions": args.regions}  # fmt: skip
    if args.smoke:
        settings.update(duration_s=SMOKE["duration"], warmup_s=SMOKE["warmup"], rounds=SMOKE["rounds"],
                        names=SMOKE["names"])  # fmt: skip
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if set(wanted) - set(TARGETS) or set(workloads) - set(WORKLOADS) or not wanted or not workloads:
        print(f"choose targets from {','.join(TARGETS)} and workloads from {','.join(WORKLOADS)}", file=sys.stderr)
        return 2
    bins = {"dnsperf": find_binary("dnsperf", "dnsperf"), "dnsmasq": find_binary("dnsmasq", "dnsmasq-base"),
            "powerdns": find_binary("pdns_server", "pdns-server pdns-backend-geoip")}  # fmt: skip
    if bins["dnsperf"].path is None:
        print(f"cannot benchmark: {bins['dnsperf'].missing_message}", file=sys.stderr)
        return 2
    skipped = [bins[t].missing_message for t in ("dnsmasq", "powerdns") if t in wanted and bins[t].path is None]
    reason = tierproxy_geodns_missing() if "tierproxy" in wanted else None
    if reason:
        skipped.append(reason)
    for message in skipped:
        _log(f"skipping: {message}")
    wanted = [t for t in wanted if not (t == "tierproxy" and reason) and (t == "tierproxy" or bins[t].path)]
    out = (args.out or REPO / "bench" / "results" / f"geodns-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tierproxy-bench-dns-"))
    machine = machine_info([], REPO)
    machine["versions"].update(_versions(bins))
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    answers: dict[str, Any] = {}
    servers: list[DnsServer] = []
    dnsperf = bins["dnsperf"].path
    assert dnsperf is not None
    _log(f"results -> {out}; {machine['note']}")
    try:
        with DnsStack(workdir, settings["names"]) as stack:
            servers = _start(stack, wanted, bins, settings, problems)
            files = _query_files(workdir, settings["names"])
            for s in servers:
                answers[s.name] = _check_answers(s)
                for label, seen in answers[s.name].items():
                    if not seen["ok"]:
                        problems.append(f"{s.name}: wrong answer for www from {label}: {seen}")
                if settings["warmup_s"] > 0:
                    for w in workloads:
                        _dnsperf(dnsperf, s, *files[w], settings["warmup_s"] / len(workloads))
            for rnd in range(1, settings["rounds"] + 1):
                for w in workloads:
                    for s in servers:
                        if not s.alive():
                            continue
                        r = {"round": rnd, "workload": w, "target": s.name, "started": time.time(),
                             **_dnsperf(dnsperf, s, *files[w], settings["duration_s"])}  # fmt: skip
                        runs.append(r)
                        _log(f"round {rnd} {w} {s.name}: {r['qps'] or 0:,.0f} QPS, lost {r['lost']}, "
                             f"rcodes {r['rcodes']}, server CPU {r['server_cpu_s']} s")  # fmt: skip
                        if r["exit"] != 0 or r["qps"] is None or r["lost"] or r["other_rcodes"]:
                            problems.append(f"{s.name} {w} round {rnd}: dnsperf exit {r['exit']}, lost {r['lost']}, "
                                            f"rcodes {r['rcodes']}:\n{r['text'][-600:]}")  # fmt: skip
                        if not s.alive():
                            problems.append(f"{s.name} died during round {rnd}; log tail:\n{s.process.log_tail(20)}")
    finally:
        _keep_artifacts(workdir, out)
        shutil.rmtree(workdir, ignore_errors=True)

    names = [t for t in TARGETS if any(r["target"] == t for r in runs)]
    rows = _summarise(runs, names, workloads)
    table = format_table(rows, COLUMNS)
    header = (f"tierproxy geodns benchmark: dnsperf -c{CLIENTS} -q{OUTSTANDING} -l{settings['duration_s']:g}, "
              f"{settings['rounds']} round(s), medians; 'N names' = {settings['names']} names; ECS {ECS_NET}; "
              f"tierproxy workers = {settings['workers']}, regions from {settings['regions']}\n"
              f"{machine['note']}")  # fmt: skip
    report(out, header + "\n" + table + "\n", problems, skipped)
    png = out / "geodns.png"
    plotted = plot.grouped_bar_chart(
        rows, png, group="workload", series="target",
        panels=(("qps", "queries per second (median)"), ("qps_per_cpu_s", "queries per server CPU-second")),
        title=f"tierproxy geodns vs dnsmasq and PowerDNS GeoIP ({machine['nproc']} shared cores)",
    )  # fmt: skip
    results = {"benchmark": "geodns", "command": ["python", "-m", "bench", *argv], "started": started,
               "settings": settings, "machine": machine, "note": machine["note"], "skipped": skipped,
               "problems": problems, "targets": {s.name: {"description": s.description, "port": s.port} for s in servers},
               "answers": answers, "summary": rows, "runs": runs, "table": table,
               "png": png.name if plotted else None}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _log(f"wrote {out / 'results.json'}, {out / 'table.txt'}" + (f", {png}" if plotted else ""))
    return 1 if problems else 0
