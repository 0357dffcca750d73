"""`tierproxy queue ...`: run a worker, print stats, look after the dead-letter stream.

    tierproxy queue worker --config queue.toml [--name CONSUMER]
    tierproxy queue stats [--redis URL] [--prefix tq] [--json] [QUEUE ...]
    tierproxy queue dlq list QUEUE [--count N] [--json]
    tierproxy queue dlq show QUEUE ENTRY_ID
    tierproxy queue dlq replay QUEUE ENTRY_ID|--all
    tierproxy queue dlq drop QUEUE ENTRY_ID|--all
    tierproxy queue order release QUEUE [ORDER_KEY ...]   # lines whose head job was lost

Exit codes: 0 ok, 1 no such entry, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any

__all__ = ["add_arguments", "main"]

STATS_FIELDS = ("depth", "delayed", "in_flight", "parked", "done", "retries", "dead", "oldest_age")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="queue_command", required=True)
    w = sub.add_parser("worker", help="run a worker process (SIGTERM: finish running jobs, then exit)")
    w.add_argument("--config", "-c", required=True, help="TOML config file (docs/queue.md)")
    w.add_argument("--name", help="consumer name (default: host-pid)")
    w.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    w.add_argument("--json-logs", action=argparse.BooleanOptionalAction, default=None)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--redis", default=os.environ.get("TIERPROXY_QUEUE_REDIS", "redis://127.0.0.1:6379/0"))
        sp.add_argument("--prefix", default="tq")

    s = sub.add_parser("stats", help="per queue: depth, delayed, in flight, done, retries, dead, oldest age, handler runs and time "
                                           "(also per worker)")
    common(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("queues", nargs="*")
    d = sub.add_parser("dlq", help="the dead-letter stream: list, show, replay, drop")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    for name in ("list", "show", "replay", "drop"):
        sp = dsub.add_parser(name)
        common(sp)
        sp.add_argument("queue")
        if name == "list":
            sp.add_argument("--count", type=int, default=100)
            sp.add_argument("--json", action="store_true")
        elif name == "show":
            sp.add_argument("entry")
        else:
            sp.add_argument("entry", nargs="?")
            sp.add_argument("--all", action="store_true")
    o = sub.add_parser("order", help="per-key ordering lines: release a line whose head job was lost")
    osub = o.add_subparsers(dest="order_command", required=True)
    rel = osub.add_parser("release", help="pop lost heads (jobs that are nowhere any more) so later jobs run")
    common(rel)
    rel.add_argument("queue")
    rel.add_argument("order_keys", nargs="*", help="default: every order key of the queue")


def main(args: argparse.Namespace) -> int:
    if args.queue_command == "worker":
        return run_worker(args)
    return asyncio.run(_admin(args))


async def _admin(args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from workers.queue.client import QueueClient

    r = aioredis.from_url(args.redis)
    try:
        client = QueueClient(r, prefix=args.prefix)
        if args.queue_command == "stats":
            return await _stats(client, args)
        if args.queue_command == "order":
            return await _order_release(client, args)
        return await _dlq(client, args)
    finally:
        await r.aclose()


async def _stats(client: Any, args: argparse.Namespace) -> int:
    names = args.queues or await client.queues()
    stats = [await client.stats(q) for q in names]
    if args.json:
        print(json.dumps({"queues": {s.queue: s.as_dict() for s in stats}}, indent=2))
        return 0
    print(f"{'queue':<20}" + "".join(f"{f:>12}" for f in STATS_FIELDS) + f"{'runs':>10}{'avg_ms':>10}")
    for s in stats:
        cells = "".join(f"{getattr(s, f):>12.1f}" if f == "oldest_age" else f"{getattr(s, f):>12}"
                        for f in STATS_FIELDS)
        print(f"{s.queue:<20}{cells}{s.handler_duration_count:>10}{s.handler_duration_avg * 1000:>10.1f}")
    if any(s.handler_duration_by_worker for s in stats):
        print()
        print(f"{'queue':<20}{'worker':<32}{'runs':>10}{'seconds':>12}{'avg_ms':>10}")
        for s in stats:
            for consumer, d in s.handler_duration_by_worker.items():
                avg = d["sum"] / d["count"] * 1000 if d["count"] else 0.0
                print(f"{s.queue:<20}{consumer:<32}{d['count']:>10}{d['sum']:>12.3f}{avg:>10.1f}")
    return 0


async def _order_release(client: Any, args: argparse.Namespace) -> int:
    keys = args.order_keys or await client.order_keys(args.queue)
    total = 0
    for key in keys:
        released, head = await client.release_lost_heads(args.queue, key)
        total += len(released)
        if released or head == "unparked":
            print(f"{args.queue} {key}: released {len(released)} lost head(s) {' '.join(released)}; "
                  f"head now: {head}")
    print(f"{total} lost head(s) released in {len(keys)} line(s) of {args.queue}")
    return 0


def _entry_doc(e: Any) -> dict[str, Any]:
    job = e.job
    return {"entry": e.id, "reason": e.reason,
            "job": None if job is None else {"id": job.id, "key": job.key, "order_key": job.order_key,
                                             "attempt": job.attempt,
                                             "error": job.error, "payload": job.payload},
            "raw": None if job is not None else e.raw.decode(errors="replace")}


async def _dlq(client: Any, args: argparse.Namespace) -> int:
    q = args.queue
    if args.dlq_command == "list":
        entries = await client.dead(q, args.count)
        if args.json:
            print(json.dumps([_entry_doc(e) for e in entries], indent=2))
        else:
            for e in entries:
                jid = e.job.id if e.job else "(undecodable)"
                err = (e.job.error or "") if e.job else ""
                print(f"{e.id}  {jid}  {e.reason}  {err}")
        return 0
    if args.dlq_command == "show":
        entry = await client.dead_entry(q, args.entry)
        if entry is None:
            print(f"{q}: no dead-letter entry {args.entry}", file=sys.stderr)
            return 1
        print(json.dumps(_entry_doc(entry), indent=2))
        return 0
    if bool(args.all) == bool(args.entry):
        print(f"dlq {args.dlq_command}: give one ENTRY_ID or --all", file=sys.stderr)
        return 2
    ids = [e.id for e in await client.dead(q, 1_000_000)] if args.all else [args.entry]
    op = client.replay if args.dlq_command == "replay" else client.drop
    missing = 0
    for entry_id in ids:
        if await op(q, entry_id):
            print(f"{args.dlq_command} {q} {entry_id}")
        else:
            missing += 1
            print(f"{q}: no dead-letter entry {entry_id} (or undecodable: drop it)", file=sys.stderr)
    return 1 if missing else 0


def run_worker(args: argparse.Namespace) -> int:
    from proxy.core.config import ConfigError, load_config
    from proxy.core.runtime import setup_logging
    from workers.queue.config import WorkerConfig

    try:
        cfg = load_config(args.config, WorkerConfig)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    setup_logging(args.log_level or cfg.log_level, args.json_logs)
    consumer = args.name or f"{socket.gethostname()}-{os.getpid()}"
    from proxy.core.sdnotify import Notifier

    return asyncio.run(_serve(cfg, consumer, Notifier.from_environ()))


async def _serve(cfg: Any, consumer: str, notifier: Any) -> int:
    import redis.asyncio as aioredis

    from workers.queue.client import QueueClient
    from workers.queue.metrics import MetricsServer
    from workers.queue.worker import Worker

    # A blocking pool: handlers that all talk to Redis at once wait for a connection instead of
    # failing with MaxConnectionsError (redis-py's default pool raises past 100).
    pool = aioredis.BlockingConnectionPool.from_url(
        cfg.redis, max_connections=cfg.concurrency + 16, timeout=None, health_check_interval=10)
    r = aioredis.Redis(connection_pool=pool)
    worker = Worker(cfg, consumer, r)
    # systemd Type=notify: READY=1 once Redis answered and the consumer groups exist.
    worker.on_ready = lambda: notifier.ready(f"consumer {consumer}: reading {', '.join(cfg.queues)}")

    def stop() -> None:
        notifier.stopping()
        worker.stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    metrics = None
    if cfg.metrics:
        metrics = MetricsServer(worker, QueueClient(r, prefix=cfg.prefix), cfg.metrics)
        await metrics.start()
    watch = asyncio.create_task(_watch_health(cfg.backpressure, worker)) if cfg.backpressure else None
    try:
        await worker.run()
    finally:
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        if metrics is not None:
            await metrics.close()
        await r.aclose()
        await pool.disconnect()
    logging.getLogger("tierproxy.queue").info("exit")
    return 0


async def _watch_health(bp: Any, worker: Any) -> None:
    """Poll the health signal (a dbproxy's /status) and pause or resume the worker (pressure.py)."""
    import aiohttp

    from proxy.core.adminguard import read_token
    from workers.queue.pressure import pause_reason

    timeout = aiohttp.ClientTimeout(total=max(bp.interval, 1.0))
    headers = {"Authorization": f"Bearer {read_token(bp.token_file)}"} if bp.token_file else {}
    tls: ssl.SSLContext | bool = True
    if bp.cert_file:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.load_verify_locations(bp.cert_file)
        tls.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
        tls.check_hostname = False  # pinned: the service name need not be one of its names
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        while True:
            doc = None
            try:
                async with http.get(bp.status_url, ssl=tls) as resp:
                    if resp.status == 200:
                        doc = await resp.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                doc = None
            worker.set_paused(pause_reason(doc, bp.rule))
            await asyncio.sleep(bp.interval)
