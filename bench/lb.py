"""Benchmark tierproxy lb against nginx, HAProxy and a direct baseline, all on loopback.

Theory of operation
-------------------
1. Two tiny keep-alive backends (one nginx worker answering `return 200 "ok\\n"` on two ports, so
   the backend is never the bottleneck) and, in front of them, each proxy under test: tierproxy lb
   on uvloop (its default) and on the stdlib asyncio loop, nginx and HAProxy, all round robin with
   keep-alive to the backends. "direct" is wrk straight at one backend: the ceiling for any proxy.
2. A warm-up run per target (not recorded), then `--rounds` rounds; in each round every target
   gets one wrk run, in a fixed order, so slow drift of the machine hits all of them alike.
3. Around each run, utime+stime of the proxy's process tree comes from /proc: requests per proxy
   CPU-second is what a proxy costs, and it is less sensitive than req/s to the fact that wrk, the
   proxy and the backends share the machine's 2 cores.
4. The result per target is the median over rounds (errors are summed, never hidden); a ratio to
   nginx is the median over rounds of that round's ratio (`round_ratio`). Output: a table on
   stdout and in table.txt, results.json
   with every run plus machine info, a PNG chart, and the generated configs and server logs.

`--tls` and `--h2` (bench/tlspeers.py): every proxy terminates TLS with the same certificate made
by openssl for the run and offers ALPN h2 and http/1.1; `--tls` loads them with wrk over https
(HTTP/1.1), `--h2` with h2load (`--streams` concurrent streams per connection). "direct" has no TLS
and is left out; the backends stay plain HTTP/1.1.

A peer whose binary is missing is skipped with the apt package to install; without wrk nothing
can run and the exit status is 2. A proxy that fails to start or dies mid-run is reported and the
exit status is 1, after the report of what did run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench import plot, realistic, tlspeers, wrkrounds
from bench.common import Binary, find_binary, format_table, run_wrk, write_wrk_script
from bench.servers import Stack, Target
from bench.wrkrounds import log as _log
from proxy.devstack.process import DevstackError

__all__ = ["add_arguments", "run"]

TARGETS = ("tierproxy", "tierproxy-asyncio", "nginx", "haproxy", "direct")
TLS_TARGETS = TARGETS[:-1]  # --tls/--h2: "direct" (a plain backend) has no TLS to compare
SMOKE = {"duration": 1, "warmup": 0, "rounds": 1}
# wrk's per-request timeout: far above any loopback latency, so a timeout means a stuck request.
WRK_TIMEOUT_S = 5.0

COLUMNS = (
    *wrkrounds.load_columns("proxy CPU s"),
    ("rps_vs_nginx", "req/s vs nginx", ".2f"),
    ("cpu_eff_vs_nginx", "req/CPU-s vs nginx", ".2f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    wrkrounds.add_load_arguments(parser)
    parser.add_argument("--targets", default=None,
                        help=f"comma-separated subset of {','.join(TARGETS)} (all; with --tls/--h2: "
                             f"{','.join(TLS_TARGETS)})")
    parser.add_argument("--smoke", action="store_true",
                        help="1 s runs, 1 round, no warm-up: checks the harness, not the speed")
    parser.add_argument("--vary", action="store_true",
                        help="every request differs from the previous one (/?r=N): no proxy can "
                             "reuse its work on a connection's last request")
    parser.add_argument("--realistic", action="store_true",
                        help="what real clients send (bench/realistic.py): browser-like header sets "
                             "with a cookie and Connection: keep-alive, every request line distinct, "
                             "backend answers of varying heads and sizes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true",
                      help="HTTPS: every proxy terminates TLS (one openssl-made certificate); wrk over https")
    mode.add_argument("--h2", action="store_true",
                      help="HTTP/2 over TLS (ALPN h2) to every proxy, loaded by h2load (nghttp2-client)")
    parser.add_argument("--streams", type=int, default=10,
                        help="--h2: concurrent streams per connection (h2load -m, 10)")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/<timestamp>/)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {
        "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "connections": args.connections, "threads": args.threads, "smoke": args.smoke,
        "wrk_timeout_s": WRK_TIMEOUT_S, "vary": args.vary or args.realistic, "realistic": args.realistic,
        "path": "bench/realistic.py PATHS" if args.realistic else "/?r=N" if args.vary else "/",
        "address": "127.0.0.1",
        "protocol": "h2" if args.h2 else "https" if args.tls else "http",
        "client": "h2load" if args.h2 else "wrk",
    }
    if args.h2:
        settings["streams"] = args.streams
    if args.smoke:
        settings.update({"duration_s": SMOKE["duration"], "warmup_s": SMOKE["warmup"],
                         "rounds": SMOKE["rounds"]})
    return settings


def _start_targets(stack: Stack, wanted: list[str], bins: dict[str, Binary],
                   problems: list[str], broken: list[str]) -> tuple[list[Target], list[Target]]:
    """Start the backends, then each wanted proxy; a missing binary or a failed start skips that
    peer only. Returns (backends, targets)."""
    backends = stack.start_backends()
    starters = {
        "tierproxy": lambda: stack.start_tierproxy("tierproxy", "uvloop"),
        "tierproxy-asyncio": lambda: stack.start_tierproxy("tierproxy-asyncio", "asyncio"),
        "nginx": stack.start_nginx_proxy,
        "haproxy": stack.start_haproxy,
    }
    b = backends[0]
    direct = Target("direct", f"wrk straight at backend1 ({b.description})", b.port, [], b.processes)
    return backends, wrkrounds.start_targets(wanted, starters, direct, bins, problems, broken)


def _measure(target: Target, client: str, settings: dict[str, Any], script: Path,
             backend_pids: list[int], duration: int) -> dict[str, Any]:
    def load() -> Any:
        if settings["protocol"] == "h2":
            return tlspeers.run_h2load(client, target.url, duration=duration, connections=settings["connections"],
                                       streams=settings["streams"], threads=settings["threads"],
                                       timeout_s=WRK_TIMEOUT_S)  # fmt: skip
        return run_wrk(client, target.url, duration=duration, connections=settings["connections"],
                       threads=settings["threads"], script=script, timeout_s=WRK_TIMEOUT_S)

    return wrkrounds.measure(target, load, backend_pids)


# The summary's columns, in order, and its ratios to nginx (per round).
SUMMARY_KEYS = ("requests_per_s", "requests_per_s_min", "requests_per_s_max", "p50_ms", "p95_ms", "p99_ms", "errors",
                "non_2xx_3xx", "socket_errors", "proxy_cpu_s", "req_per_cpu_s", "client_cpu_s", "backend_cpu_s")
RATIOS = (("rps_vs_nginx", "nginx", "requests_per_s"), ("cpu_eff_vs_nginx", "nginx", "req_per_cpu_s"))


def _tierproxy_status(target: Target) -> Any:
    """The balancer's own view after the runs: backend states, counters, retries, ejections."""
    if target.admin_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{target.admin_port}/status", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as exc:
        return {"error": repr(exc)}


def _log_findings(path: Path) -> list[str]:
    """Warning-or-worse lines of a tierproxy log (it runs at log_level warning, so: all lines)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()]


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = _settings(args)
    secure = settings["protocol"] != "http"
    if args.h2 and settings["vary"]:
        print("--vary/--realistic are wrk Lua scripts: not with --h2 (h2load)", file=sys.stderr)
        return 2
    wanted = wrkrounds.choose_targets(args.targets, TLS_TARGETS if secure else TARGETS)
    if wanted is None:
        return 2
    client_bin = find_binary("h2load", "nghttp2-client") if settings["client"] == "h2load" \
        else find_binary("wrk", "wrk")  # fmt: skip
    bins = {"client": client_bin, "nginx": find_binary("nginx", "nginx"),
            "haproxy": find_binary("haproxy", "haproxy")}
    if bins["client"].path is None:
        print(f"cannot benchmark: {bins['client'].missing_message}", file=sys.stderr)
        return 2
    missing = wrkrounds.missing_peers(bins)
    if bins["nginx"].path is None:
        _log("backends fall back to bench.backend (Python), which shares the cores: "
             "results understate every proxy")

    out, workdir, started, machine = wrkrounds.open_run(args.out, "%Y%m%d-%H%M%S", "tierproxy-bench-", bins)
    wrk = bins["client"].path
    assert wrk is not None
    problems: list[str] = []
    broken: list[str] = []  # proxies that failed to start or died: the exit status becomes 1
    runs: list[dict[str, Any]] = []

    try:
        with Stack(workdir, bins["nginx"].path, bins["haproxy"].path) as stack:
            try:
                stack.realistic = settings["realistic"]
                if secure:
                    stack.tls = tlspeers.make_cert(workdir / "tls")
                backends, targets = _start_targets(stack, wanted, bins, problems, broken)
            except DevstackError as exc:
                print(f"cannot benchmark: the backends failed to start: {exc}", file=sys.stderr)
                return 1
            backend_pids = sorted({p.pid for b in backends for p in b.processes})
            script = write_wrk_script(workdir, vary=settings["vary"],
                                      request_lua=realistic.wrk_lua() if settings["realistic"] else None)
            wrkrounds.run_rounds(targets, settings,
                                 lambda t, seconds: _measure(t, wrk, settings, script, backend_pids, seconds),
                                 runs, problems, broken, details=True)  # fmt: skip
            statuses = {t.name: _tierproxy_status(t) for t in targets if t.admin_port}
            log_lines = {t.name: _log_findings(t.processes[0].log_path)
                         for t in targets if t.name.startswith("tierproxy")}
    finally:
        wrkrounds.keep_artifacts(workdir, out)
        shutil.rmtree(workdir, ignore_errors=True)

    for name, lines in log_lines.items():
        if lines:
            problems.append(f"{name} logged {len(lines)} warning/error line(s), e.g. {lines[0][:300]}")
    rows = wrkrounds.summarise(targets, runs, SUMMARY_KEYS, RATIOS)
    table = format_table(rows, COLUMNS)
    load = (f"h2load -t{settings['threads']} -c{settings['connections']} -m{settings['streams']} "
            f"-D{settings['duration_s']} over h2 (TLS, ALPN)" if settings["protocol"] == "h2" else
            f"wrk -t{settings['threads']} -c{settings['connections']} -d{settings['duration_s']}s"
            + (" over https (TLS, HTTP/1.1)" if secure else ""))  # fmt: skip
    header = (f"tierproxy lb benchmark: {load}, {settings['rounds']} round(s), medians; "
              f"{'realistic client requests (bench/realistic.py), every one distinct; ' if settings['realistic'] else 'every request distinct (/?r=N); ' if settings['vary'] else ''}"
              f"backends: {stack.backend_kind}\n{machine['note']}")
    wrkrounds.report(out, header + "\n" + table + "\n", problems, missing)

    png = out / "lb.png"
    plotted = plot.bar_chart(rows, png, title=f"tierproxy lb vs peers ({machine['nproc']} shared cores)")
    if not plotted:
        _log("no PNG: matplotlib is not installed (pip install -e '.[bench]')")
    results = {
        "benchmark": "lb" if not secure else f"lb-{settings['protocol']}",
        "command": ["python", "-m", "bench", *argv],
        "started": started,
        "settings": settings,
        "machine": machine,
        "note": machine["note"],
        "backends": {"kind": stack.backend_kind, "addresses": stack.backends},
        "targets": {t.name: {"description": t.description, "url": t.url} for t in targets},
        "skipped": missing,
        "problems": problems,
        "summary": rows,
        "rounds": runs,
        "tierproxy_status": statuses,
        "tierproxy_log": log_lines,
        "table": table,
        "png": png.name if plotted else None,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _log(f"wrote {out / 'results.json'}, {out / 'table.txt'}" + (f", {png}" if plotted else ""))
    return 1 if broken else 0

