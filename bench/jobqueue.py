"""Benchmark tierproxy queue against Celery and arq on the same Redis: jobs per second.

Theory of operation
-------------------
1. One devstack redis-server. Each system gets one worker process running `--concurrency` jobs at
   once: `tierproxy queue worker` (asyncio, Redis Streams), Celery (`-P threads`, Redis broker,
   acks late, no result backend) and arq (asyncio, `max_jobs`, no stored results, poll_delay
   1 ms: see bench/queuejobs_arq.py). Celery and arq come from PyPI (`pip install -e '.[bench]'`).
2. Workloads: "noop" and "1 ms" (a 1 ms sleep), each job then INCRs a counter on the same Redis
   (bench/queuejobs*.py): the same work in all three, and how the harness sees jobs finish.
3. One measured run of (workload, system): a fresh worker, one warm-up job run through it (it is
   ready and connected), the worker SIGSTOPped, `--jobs` jobs enqueued by one sequential producer
   (its rate is reported as enqueue/s), SIGCONT, and the time until the counter reaches `--jobs`.
   So jobs/s is the consumers' rate alone, producer excluded; the worker's CPU (its process tree,
   bench/common.py) gives jobs per worker CPU-second. The Redis database is flushed between runs.
4. `--rounds` rounds, each running every (workload, system) once, back to back; medians, and the
   ratios to Celery and to arq are taken per round, then the median (bench/common.round_ratio).
   Output: a table on stdout and in table.txt, results.json (every run, settings, machine), a PNG.

A system whose package is missing is skipped with the install command; a worker that fails to
start or a run that does not finish makes the exit status 1 after the report.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import find_binary, machine_info, median, round_ratio, tree_cpu_seconds
from bench.pgbench import choose, log, write_report
from bench.queuejobs import DONE_KEY
from proxy.devstack.process import DevstackError, ManagedProcess, python_child_env
from proxy.devstack.redis import start_redis

__all__ = ["add_arguments", "run"]

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("tierproxy", "celery", "arq")
WORKLOADS = {"noop": "noop", "1 ms": "sleep1ms"}  # workload -> job (function) name
SMOKE = {"jobs": 200, "rounds": 1, "concurrency": 8}
PACKAGES = {"celery": "celery", "arq": "arq"}
START_TIMEOUT = 60.0

COLUMNS = (
    ("workload", "workload", "s"),
    ("target", "target", "s"),
    ("jobs_per_s", "jobs/s", ",.0f"),
    ("vs_celery", "vs Celery", ".2f"),
    ("vs_arq", "vs arq", ".2f"),
    ("worker_cpu_s", "worker CPU s", ".2f"),
    ("jobs_per_cpu_s", "jobs/CPU-s", ",.0f"),
    ("enqueue_per_s", "enqueue/s", ",.0f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per measured run (5000)")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs run at once by each worker (16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--smoke", action="store_true", help="200 jobs, 1 round: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, help="output dir (bench/results/queue-<timestamp>/)")


# -- workers -----------------------------------------------------------------------------


def _tierproxy_config(workdir: Path, url: str, concurrency: int) -> Path:
    path = workdir / "queue.toml"
    lines = [f'redis = "{url}"', f"concurrency = {concurrency}", "poll_interval = 0.1", "log_level = \"warning\""]
    for job in WORKLOADS.values():
        lines += [f"[queues.{job}]", f'handler = "bench.queuejobs:{job}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(target: str, workdir: Path, url: str, concurrency: int) -> ManagedProcess:
    bindir = Path(sys.executable).parent
    if target == "tierproxy":
        argv = [sys.executable, "-m", "proxy.cli", "queue", "worker", "--config",
                str(_tierproxy_config(workdir, url, concurrency)), "--name", "bench", "--no-json-logs"]
    elif target == "celery":
        argv = [str(bindir / "celery"), "-A", "bench.queuejobs_celery", "worker", "-P", "threads",
                "-c", str(concurrency), "-Q", "bench", "-l", "warning", "--without-gossip", "--without-mingle",
                "--without-heartbeat"]  # fmt: skip
    else:
        argv = [str(bindir / "arq"), "bench.queuejobs_arq.WorkerSettings"]
    env = {**python_child_env(), "BENCH_QUEUE_REDIS": url, "BENCH_QUEUE_CONCURRENCY": str(concurrency)}
    return ManagedProcess(argv, name=f"worker-{target}", log_dir=workdir, env=env, cwd=REPO)


# -- producers: one sequential client per system ------------------------------------------


def enqueue(target: str, url: str, job: str, n: int) -> None:
    if target == "tierproxy":
        asyncio.run(_enqueue_tierproxy(url, job, n))
    elif target == "celery":
        from bench.queuejobs_celery import app  # reads BENCH_QUEUE_REDIS: set by run()

        for _ in range(n):
            app.send_task(job, queue="bench")
    else:
        asyncio.run(_enqueue_arq(url, job, n))


async def _enqueue_tierproxy(url: str, job: str, n: int) -> None:
    import redis.asyncio as aioredis

    from workers.queue.client import QueueClient

    r = aioredis.from_url(url)
    try:
        q = QueueClient(r)
        for _ in range(n):
            await q.enqueue(job, {})
    finally:
        await r.aclose()


async def _enqueue_arq(url: str, job: str, n: int) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        for _ in range(n):
            await pool.enqueue_job(job)
    finally:
        await pool.aclose()


def _wait_done(r: redis.Redis, n: int, proc: ManagedProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(r.get(DONE_KEY) or 0) >= n:
            return True
        if proc.returncode is not None:
            return False
        time.sleep(0.005)
    return False


def measure(target: str, workload: str, url: str, r: redis.Redis, workdir: Path, settings: dict[str, Any],
            rnd: int) -> dict[str, Any]:  # fmt: skip
    """One measured run (module docstring, step 3); raises DevstackError when the worker fails."""
    job, n = WORKLOADS[workload], settings["jobs"]
    r.flushdb()
    proc = start_worker(target, workdir, url, settings["concurrency"])
    try:
        enqueue(target, url, job, 1)
        if not _wait_done(r, 1, proc, START_TIMEOUT):
            raise DevstackError(f"{target} worker ran no warm-up job: {proc.log_tail(20)}")
        proc.stop()  # the queue fills while no consumer runs: the timed part is consuming only
        r.set(DONE_KEY, 0)
        started = time.monotonic()
        enqueue(target, url, job, n)
        enqueue_s = time.monotonic() - started
        cpu0 = tree_cpu_seconds([proc.pid])
        started = time.monotonic()
        proc.cont()
        finished = _wait_done(r, n, proc, max(60.0, n / 20))
        wall = time.monotonic() - started
        cpu = tree_cpu_seconds([proc.pid]) - cpu0
        done = int(r.get(DONE_KEY) or 0)
    finally:
        proc.terminate(10)
    if not finished:
        raise DevstackError(f"{target} {workload}: {done} of {n} jobs done: {proc.log_tail(20)}")
    return {"round": rnd, "workload": workload, "target": target, "jobs": n, "done": done, "wall_s": wall,
            "jobs_per_s": n / wall, "enqueue_per_s": n / enqueue_s if enqueue_s > 0 else None,
            "worker_cpu_s": cpu, "jobs_per_cpu_s": n / cpu if cpu > 0 else None}  # fmt: skip


def summarise(runs: list[dict[str, Any]], targets: list[str], workloads: list[str]) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        mine = [r for r in runs if r["workload"] == w]
        for t in targets:
            ts = [r for r in mine if r["target"] == t]
            if not ts:
                continue
            rows.append({
                "workload": w, "target": t, "runs": len(ts),
                "jobs_per_s": median(r["jobs_per_s"] for r in ts),
                "vs_celery": round_ratio(mine, t, "celery", "jobs_per_s") if t != "celery" else None,
                "vs_arq": round_ratio(mine, t, "arq", "jobs_per_s") if t != "arq" else None,
                "worker_cpu_s": median(r["worker_cpu_s"] for r in ts),
                "jobs_per_cpu_s": median(r["jobs_per_cpu_s"] for r in ts),
                "enqueue_per_s": median(r["enqueue_per_s"] for r in ts),
            })  # fmt: skip
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> int:
    settings = {"jobs": args.jobs, "concurrency": args.concurrency, "rounds": args.rounds, "smoke": args.smoke}
    if args.smoke:
        settings.update(SMOKE)
    chosen = choose(args.targets, args.workloads, TARGETS, WORKLOADS)
    if chosen is None:
        return 2
    wanted, workloads = chosen
    missing = [f"{t}: not installed (pip install -e '.[bench]')" for t in wanted
               if t in PACKAGES and importlib.util.find_spec(PACKAGES[t]) is None]  # fmt: skip
    for m in missing:
        log(f"skipping peer: {m}")
    wanted = [t for t in wanted if t not in PACKAGES or importlib.util.find_spec(PACKAGES[t]) is not None]
    out = (args.out or REPO / "bench" / "results" / f"queue-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tierproxy-bench-queue-"))
    machine = machine_info([find_binary("redis-server", "redis-server")], REPO)
    machine["versions"].update({p: _version(p) for p in ("celery", "arq", "redis")})
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    log(f"results -> {out}; {machine['note']}")
    server = None
    try:
        server = start_redis(log_dir=workdir)
        os.environ["BENCH_QUEUE_REDIS"] = server.url  # the Celery app module reads it on import
        r = redis.Redis.from_url(server.url)
        for rnd in range(settings["rounds"]):
            for w in workloads:
                for t in wanted:
                    if any(t in p for p in problems):
                        continue
                    try:
                        runs.append(measure(t, w, server.url, r, workdir, settings, rnd))
                        log(f"round {rnd + 1} {w} {t}: {runs[-1]['jobs_per_s']:,.0f} jobs/s")
                    except DevstackError as exc:
                        problems.append(f"{t} {w}: {exc}")
                        log(problems[-1])
        r.close()
    except DevstackError as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
        for log_file in workdir.glob("*.log"):
            shutil.copy(log_file, out / log_file.name)
        shutil.rmtree(workdir, ignore_errors=True)
    names = [t for t in wanted if any(r["target"] == t for r in runs)]
    rows = summarise(runs, names, workloads)
    header = (f"tierproxy queue benchmark: {settings['jobs']:,} jobs per run consumed by one worker process "
              f"per system running {settings['concurrency']} at once (producer excluded), "
              f"{settings['rounds']} round(s), medians\n{machine['note']}")  # fmt: skip
    write_report(out, benchmark="queue", header=header, rows=rows, columns=COLUMNS,
                 panels=(("jobs_per_s", "jobs/s (median)"), ("jobs_per_cpu_s", "jobs per worker CPU-second")),
                 title=f"tierproxy queue vs Celery and arq, one Redis ({machine['nproc']} shared cores)",
                 results={"command": ["python", "-m", "bench", *argv], "started": started, "settings": settings,
                          "machine": machine, "runs": runs},
                 problems=problems, missing=missing)  # fmt: skip
    return 1 if problems else 0


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
