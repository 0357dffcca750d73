"""Benchmark tierproxy cdn's cache hits against Varnish and nginx proxy_cache, and the hit ratio of
each eviction policy on a Zipf-distributed trace.

Theory of operation
-------------------
1. One nginx origin serves `--objects` files of `--size` bytes with `Cache-Control: max-age=3600`
   (bench/cdnpeers.py). In front of it: tierproxy cdn, Varnish (`varnishd`) and nginx with
   proxy_cache, each with a 64 MiB memory store; "direct" is wrk straight at the origin.
2. Every cache is filled first (each object requested once), then one request per cache must
   say it was a hit (`Cache-Status`, `X-Varnish`, `X-Cache-Status`): what is measured are hits.
3. As in `bench lb` (bench/wrkrounds.py serves both): a warm-up run per target, then `--rounds`
   rounds in which each target gets one wrk run cycling over the same objects; the CPU time of each cache's
   process tree from /proc around each run gives requests per CPU-second, and each round's ratio
   to Varnish and to nginx (median over rounds) cancels the machine's drift.
4. Eviction: a Zipf(`--alpha`) trace over `--trace-objects` objects (sizes drawn once from a
   log-normal around 16 KiB, seeded) is replayed through the cdn's own store
   (proxy/cdn/whatif.py, as `tierproxy cdn whatif`) with a cache of `--cache-share` of the distinct
   bytes, under every policy: hit ratio and byte hit ratio side by side.
Output: a table on stdout and in table.txt, results.json, the generated configs and logs.

A missing peer (varnish, nginx) is skipped with the apt package to install; nginx is also the
origin, and without it or wrk nothing runs (exit 2). A cache that fails to start, dies or does not
answer hits is reported and the exit status is 1, after the report of what did run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import wrkrounds
from bench.cdnpeers import CdnStack, fetch_headers, is_hit, object_path, wrk_objects_lua
from bench.common import find_binary, format_table, run_wrk, write_wrk_script
from bench.servers import Target
from bench.wrkrounds import log as _log
from proxy.cdn.policies import POLICIES
from proxy.cdn.whatif import replay
from proxy.devstack.process import DevstackError

__all__ = ["add_arguments", "run", "zipf_trace"]

TARGETS = ("tierproxy", "varnish", "nginx", "direct")
SMOKE = {"duration": 1, "warmup": 0, "rounds": 1, "trace_requests": 20_000}
WRK_TIMEOUT_S = 5.0

COLUMNS = (
    *wrkrounds.load_columns("cache CPU s"),
    ("rps_vs_varnish", "req/s vs Varnish", ".2f"),
    ("cpu_eff_vs_varnish", "req/CPU-s vs Varnish", ".2f"),
    ("rps_vs_nginx", "req/s vs nginx", ".2f"),
)
POLICY_COLUMNS = (
    ("policy", "policy", "s"),
    ("hit_ratio", "hit ratio", ".4f"),
    ("byte_hit_ratio", "byte hit ratio", ".4f"),
    ("evictions", "evictions", "d"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    wrkrounds.add_load_arguments(parser)
    parser.add_argument("--objects", type=int, default=100, help="distinct objects requested (100)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per object (4096)")
    parser.add_argument("--targets", default=None, help=f"comma-separated subset of {','.join(TARGETS)} (all)")
    parser.add_argument("--trace-objects", type=int, default=10_000, help="objects in the Zipf trace (10,000)")
    parser.add_argument("--trace-requests", type=int, default=300_000, help="requests in the Zipf trace (300,000)")
    parser.add_argument("--alpha", type=float, default=0.8, help="the Zipf exponent (0.8)")
    parser.add_argument("--cache-share", type=float, default=0.1,
                        help="cache size as a share of the trace's distinct bytes (0.1)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 s runs, 1 round, no warm-up, a 20,000-request trace: checks the harness")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/<timestamp>/)")


def zipf_trace(objects: int, requests: int, alpha: float, seed: int = 19) -> list[tuple[Any, int]]:
    """(store key, size) records: object i drawn with probability ~ 1/(i+1)^alpha; sizes from a
    log-normal with median 16 KiB (at least 200 bytes), fixed per object."""
    rng = random.Random(seed)
    sizes = [max(200, int(rng.lognormvariate(9.7, 1.0))) for _ in range(objects)]
    weights = [1 / (i + 1) ** alpha for i in range(objects)]
    picks = rng.choices(range(objects), weights=weights, k=requests)
    return [((b"bench /z/%d" % i, ""), sizes[i]) for i in picks]


def eviction_table(args: argparse.Namespace, requests: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    trace = zipf_trace(args.trace_objects, requests, args.alpha)
    distinct = {k: s for k, s in trace}
    cache = int(sum(distinct.values()) * args.cache_share)
    warmup = requests // 10
    rows = []
    for policy in POLICIES:
        t0 = time.perf_counter()
        r = replay(trace, cache, policy, max_object_bytes=cache, warmup=warmup)
        rows.append({**r.as_dict(), "replay_s": round(time.perf_counter() - t0, 3)})
    info = {"objects": args.trace_objects, "requests": requests, "alpha": args.alpha, "distinct": len(distinct),
            "distinct_bytes": sum(distinct.values()), "cache_bytes": cache, "warmup_requests": warmup}
    return rows, info


def _measure(target: Target, wrk: str, settings: dict[str, Any], script: Path, duration: int) -> dict[str, Any]:
    return wrkrounds.measure(target, lambda: run_wrk(wrk, target.url, duration=duration,
                                                     connections=settings["connections"], threads=settings["threads"],
                                                     script=script, timeout_s=WRK_TIMEOUT_S))


# The summary's columns, in order, and its ratios to Varnish and nginx (per round).
SUMMARY_KEYS = ("requests_per_s", "p50_ms", "p99_ms", "errors", "proxy_cpu_s", "req_per_cpu_s")
RATIOS = (("rps_vs_varnish", "varnish", "requests_per_s"), ("cpu_eff_vs_varnish", "varnish", "req_per_cpu_s"),
          ("rps_vs_nginx", "nginx", "requests_per_s"))


def _fill_and_check(target: Target, objects: int) -> bool:
    """Request every object once (a miss stores it), then one again: must be a hit."""
    base = target.url.rstrip("/")
    for i in range(objects):
        fetch_headers(base + object_path(i))
    return target.name == "direct" or is_hit(target.name, fetch_headers(base + object_path(0)))


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                "connections": args.connections, "threads": args.threads, "objects": args.objects,
                "size": args.size, "smoke": args.smoke, "trace_requests": args.trace_requests}
    if args.smoke:
        settings.update({"duration_s": SMOKE["duration"], "warmup_s": SMOKE["warmup"], "rounds": SMOKE["rounds"],
                         "trace_requests": SMOKE["trace_requests"]})
    wanted = wrkrounds.choose_targets(args.targets, TARGETS)
    if wanted is None:
        return 2
    bins = {"wrk": find_binary("wrk", "wrk"), "nginx": find_binary("nginx", "nginx"),
            "varnish": find_binary("varnishd", "varnish")}
    for needed in ("wrk", "nginx"):
        if bins[needed].path is None:
            print(f"cannot benchmark: {bins[needed].missing_message}" + (" (nginx is also the origin)"
                  if needed == "nginx" else ""), file=sys.stderr)
            return 2
    missing = wrkrounds.missing_peers(bins)

    out, workdir, started, machine = wrkrounds.open_run(args.out, "cdn-%Y%m%d-%H%M%S", "tierproxy-bench-cdn-", bins)
    wrk = bins["wrk"].path
    assert wrk is not None
    problems: list[str] = []
    broken: list[str] = []
    runs: list[dict[str, Any]] = []
    hits_checked: dict[str, bool] = {}
    cdn_status: Any = None
    try:
        with CdnStack(workdir, bins["nginx"].path, None) as stack:
            try:
                origin = stack.start_origin(args.objects, args.size)
            except DevstackError as exc:
                print(f"cannot benchmark: the origin failed to start: {exc}", file=sys.stderr)
                return 1
            starters = {"tierproxy": stack.start_tierproxy_cdn, "nginx": stack.start_nginx_cache,
                        "varnish": lambda: stack.start_varnish(bins["varnish"].path or "varnishd")}
            targets = wrkrounds.start_targets(wanted, starters, origin, bins, problems, broken)
            for t in targets:
                hits_checked[t.name] = _fill_and_check(t, args.objects)
                if not hits_checked[t.name]:
                    problems.append(f"{t.name}: a request for a stored object was not answered as a hit")
                    broken.append(t.name)
            script = write_wrk_script(workdir, request_lua=wrk_objects_lua(args.objects))
            wrkrounds.run_rounds(targets, settings, lambda t, seconds: _measure(t, wrk, settings, script, seconds),
                                 runs, problems, broken)
            tp = next((t for t in targets if t.name == "tierproxy"), None)
            if tp is not None and tp.admin_port is not None:
                cdn_status = json.loads(fetch_body(f"http://127.0.0.1:{tp.admin_port}/status"))
    finally:
        wrkrounds.keep_artifacts(workdir, out)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = wrkrounds.summarise(targets, runs, SUMMARY_KEYS, RATIOS)
    table = format_table(rows, COLUMNS)
    _log(f"eviction: replaying a {settings['trace_requests']}-request Zipf trace under {', '.join(POLICIES)}")
    policy_rows, trace_info = eviction_table(args, settings["trace_requests"])
    policy_table = format_table(policy_rows, POLICY_COLUMNS)
    header = (f"tierproxy cdn benchmark: cache hits, wrk -t{settings['threads']} -c{settings['connections']} "
              f"-d{settings['duration_s']}s over {args.objects} objects of {args.size} bytes, "
              f"{settings['rounds']} round(s), medians\n{machine['note']}")
    evict_header = (f"eviction policies on a Zipf({args.alpha}) trace: {trace_info['requests']} requests over "
                    f"{trace_info['distinct']} objects ({trace_info['distinct_bytes']:,} bytes), cache "
                    f"{trace_info['cache_bytes']:,} bytes ({args.cache_share:.0%}), first "
                    f"{trace_info['warmup_requests']} requests not counted")
    text = f"{header}\n{table}\n\n{evict_header}\n{policy_table}\n"
    wrkrounds.report(out, text, problems, missing)
    results = {
        "benchmark": "cdn", "command": ["python", "-m", "bench", *argv], "started": started,
        "settings": settings, "machine": machine, "note": machine["note"],
        "targets": {t.name: {"description": t.description, "url": t.url} for t in targets},
        "hits_checked": hits_checked, "skipped": missing, "problems": problems,
        "summary": rows, "rounds": runs, "tierproxy_status": cdn_status,
        "eviction": {"trace": trace_info, "policies": policy_rows}, "table": text,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _log(f"wrote {out / 'results.json'}, {out / 'table.txt'}")
    return 1 if broken else 0


def fetch_body(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()
