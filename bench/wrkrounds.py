"""The run of a wrk benchmark, shared by `bench lb` (bench/lb.py) and `bench cdn` (bench/cdn.py).

Both load a set of `Target`s (bench/servers.py) the same way: the targets asked for with
--targets (`choose_targets`); the load generator and peers found, the missing ones logged
(`missing_peers`); the targets started, a failed start reported (`start_targets`); a results
directory, a temporary work directory and the machine described (`open_run`); a warm-up run per
target, then `rounds` rounds in which every target gets one run in a fixed order, so slow drift of
the machine hits all of them alike (`run_rounds`); around each run the CPU time of the target's
process tree from /proc (`measure`, common.py's `tree_cpu_seconds`), which gives requests per
proxy CPU-second; per target the medians over rounds, errors summed, and ratios to peers per round
(`summarise`, common.py's `round_ratio`); the table printed and kept (common.py's `report`), and
the generated configs and logs kept beside the results (`keep_artifacts`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import (
    Binary,
    log,
    machine_counters,
    machine_info,
    median,
    report,
    round_ratio,
    tree_cpu_seconds,
)
from bench.servers import REPO, Target
from proxy.devstack.process import DevstackError

__all__ = ["RunDirs", "add_load_arguments", "choose_targets", "keep_artifacts", "load_columns", "log", "measure",
           "missing_peers", "open_run", "report", "run_rounds", "start_targets", "summarise"]


def load_columns(cpu_heading: str) -> tuple[tuple[str, str, str], ...]:
    """The table's columns up to requests per CPU-second; `cpu_heading` names whose CPU it is."""
    return (
        ("target", "target", "s"),
        ("requests_per_s", "req/s", ",.0f"),
        ("p50_ms", "p50 ms", ".2f"),
        ("p99_ms", "p99 ms", ".2f"),
        ("errors", "errors", "d"),
        ("proxy_cpu_s", cpu_heading, ".2f"),
        ("req_per_cpu_s", "req/CPU-s", ",.0f"),
    )


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--duration, --warmup, --connections, --threads and --rounds."""
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target (3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")


def choose_targets(spec: str | None, choices: Sequence[str]) -> list[str] | None:
    """The comma-separated --targets (all `choices` when not given) as a list; None, with the
    choices on stderr, when it is empty or names one that is not known."""
    wanted = [t.strip() for t in (spec or ",".join(choices)).split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(choices))
    if unknown or not wanted:
        print(f"unknown target(s): {', '.join(unknown) or '(none given)'}; choose from {', '.join(choices)}",
              file=sys.stderr)
        return None
    return wanted


def missing_peers(bins: Mapping[str, Binary]) -> list[str]:
    """Why each binary that is not installed is skipped (with its apt package); each is logged."""
    missing = [b.missing_message for b in bins.values() if b.path is None]
    for message in missing:
        log(f"skipping peer: {message}")
    return missing


def start_targets(wanted: Iterable[str], starters: Mapping[str, Callable[[], Target]], direct: Target,
                  bins: Mapping[str, Binary], problems: list[str], broken: list[str]) -> list[Target]:  # fmt: skip
    """Each wanted target, in order: "direct" is `direct` (already running), a peer whose binary is
    missing is left out (`missing_peers` said so), any other is started by its starter; one that
    fails to start is a problem, and broken."""
    targets = []
    for name in wanted:
        if name == "direct":
            targets.append(direct)
            continue
        if name in bins and bins[name].path is None:
            continue
        try:
            targets.append(starters[name]())
        except DevstackError as exc:
            problems.append(f"{name} failed to start: {exc}")
            broken.append(name)
            log(problems[-1])
    return targets


class RunDirs(NamedTuple):
    out: Path  # results
    workdir: Path  # configs and logs of this run, removed at the end
    started: str
    machine: dict[str, Any]


def open_run(out: Path | None, stamp: str, workdir_prefix: str, bins: Mapping[str, Binary]) -> RunDirs:
    """`out` (default bench/results/<now formatted by `stamp`>/) made, a work directory, the time
    and the machine (with the versions of `bins`)."""
    out = (out or REPO / "bench" / "results" / dt.datetime.now().strftime(stamp)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix))
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_info(bins.values(), REPO)
    log(f"results -> {out}; {machine['note']}")
    return RunDirs(out, workdir, started, machine)


def measure(target: Target, load: Callable[[], Any], backend_pids: list[int] | None = None) -> dict[str, Any]:
    """One `load()` (a wrk or h2load run) at `target`, with the CPU seconds of the target's process
    tree (and of `backend_pids`' when given) around it."""
    proxy0 = tree_cpu_seconds(target.proxy_pids)
    backend0 = tree_cpu_seconds(backend_pids) if backend_pids is not None else 0.0
    machine0 = machine_counters()
    result = load()
    machine1 = machine_counters()
    proxy_cpu = tree_cpu_seconds(target.proxy_pids) - proxy0 if target.proxy_pids else None
    run = {"target": target.name, **result.to_json(), "proxy_cpu_s": proxy_cpu}
    if backend_pids is not None:
        run["backend_cpu_s"] = tree_cpu_seconds(backend_pids) - backend0
    run["req_per_cpu_s"] = result.requests / proxy_cpu if proxy_cpu else None
    # The machine's context switches per request and idle CPU seconds over the run (all processes:
    # the load generator, the proxy, the backends and anything else awake).
    run["machine_ctxt_per_req"] = (machine1["ctxt"] - machine0["ctxt"]) / result.requests if result.requests else None
    run["machine_idle_s"] = round(machine1["idle_s"] - machine0["idle_s"], 2)
    run["proxy_alive_after"] = target.alive()
    return run


def run_rounds(targets: Sequence[Target], settings: Mapping[str, Any], measure_one: Callable[[Target, int], dict[str, Any]],
               runs: list[dict[str, Any]], problems: list[str], broken: list[str], *, details: bool = False) -> None:  # fmt: skip
    """A warm-up per target (`settings["warmup_s"]`, not recorded), then `settings["rounds"]` rounds
    of `measure_one(target, seconds)` each; every run is appended to `runs`, errors to `problems`,
    a target that died to `broken` too. With `details` (bench lb) the log and the problems say more:
    p99 and proxy CPU per run, errors in the warm-up, the kinds of errors, a dead target's exit codes
    and log tail."""
    if settings["warmup_s"] > 0:
        for t in targets:
            log(f"warm-up {t.name} {settings['warmup_s']}s")
            warm = measure_one(t, settings["warmup_s"])
            if details and warm["errors"]:
                problems.append(f"{t.name}: {warm['errors']} errors during warm-up")
    for rnd in range(1, settings["rounds"] + 1):
        for t in targets:
            if not t.alive():
                continue  # reported when it was found dead
            run_ = {"round": rnd, "started": time.time(), **measure_one(t, settings["duration_s"])}
            runs.append(run_)
            if details:
                cpu, p99 = run_["proxy_cpu_s"], run_["p99_ms"]
                log(f"round {rnd} {t.name}: {run_['requests_per_s']:,.0f} req/s, "
                    f"p99 {'-' if p99 is None else f'{p99:.2f}'} ms, errors {run_['errors']}, proxy CPU "
                    + (f"{cpu:.2f} s" if cpu is not None else "-"))
            else:
                log(f"round {rnd} {t.name}: {run_['requests_per_s']:,.0f} req/s, errors {run_['errors']}")
            if run_["errors"]:
                problems.append(f"{t.name} round {rnd}: {run_['errors']} errors" + (
                    f" (non-2xx/3xx {run_['non_2xx_3xx']}, socket {run_['socket_errors']})" if details else ""))
            if not t.alive():
                broken.append(t.name)
                if details:
                    codes = [p.returncode for p in t.processes]
                    problems.append(f"{t.name} died during round {rnd} (exit {codes}); "
                                    f"log tail:\n{t.processes[0].log_tail(20)}")
                    log(problems[-1])
                else:
                    problems.append(f"{t.name} died during round {rnd}")


# How a summary row's value comes from a target's runs, where it is not their median.
_AGGREGATES: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "requests_per_s_min": lambda mine: min(r["requests_per_s"] for r in mine),
    "requests_per_s_max": lambda mine: max(r["requests_per_s"] for r in mine),
    "errors": lambda mine: sum(r["errors"] for r in mine),
    "non_2xx_3xx": lambda mine: sum(r["non_2xx_3xx"] for r in mine),
    "socket_errors": lambda mine: sum(sum(r["socket_errors"].values()) for r in mine),
}


def summarise(targets: Iterable[Target], runs: list[dict[str, Any]], keys: Sequence[str],
              ratios: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """One row per target that ran: its name, description and number of runs, then each of `keys`
    over its runs (the median; minima, maxima and error counts as `_AGGREGATES` says), then per
    (column, peer, key) of `ratios` the median over rounds of its `key` / the peer's."""
    rows = []
    for t in targets:
        mine = [r for r in runs if r["target"] == t.name]
        if not mine:
            continue
        row = {"target": t.name, "description": t.description, "runs": len(mine)}
        for key in keys:
            row[key] = _AGGREGATES[key](mine) if key in _AGGREGATES else median(r[key] for r in mine)
        rows.append(row)
    for row in rows:
        for column, peer, key in ratios:
            row[column] = round_ratio(runs, row["target"], peer, key)
    return rows


def keep_artifacts(workdir: Path, out: Path) -> None:
    """Copy generated configs and server logs next to the results (the temp dir is removed)."""
    for pattern, dest in (("*.toml", "configs"), ("*.cfg", "configs"), ("*/nginx.conf", "configs"),
                          ("logs/*.log", "logs"), ("*/error.log", "logs")):
        for src in workdir.glob(pattern):
            target_dir = out / dest
            target_dir.mkdir(parents=True, exist_ok=True)
            name = src.name if src.parent == workdir or src.parent.name == "logs" \
                else f"{src.parent.name}-{src.name}"
            shutil.copy2(src, target_dir / name)
