"""The consumer: asyncio workers in a Redis Streams consumer group, at-least-once.

One `Worker` reads every configured queue with XREADGROUP (one blocking call for all streams),
runs up to `concurrency` handlers at once and settles each job with one script (scripts.py):
acknowledged only after its handler returned (FINISH, which also marks the idempotency key done),
or put back with a backoff (RETRY), or dead-lettered after `max_attempts` (DEAD).

Visibility: while a job runs, a heartbeat renews its claim (HEARTBEAT: XCLAIM JUSTID resets its idle
time), so XAUTOCLAIM, which every worker runs to take over jobs idle longer than
`visibility_timeout`, only ever takes jobs of a worker that stopped (killed, frozen, cut off). A
worker that finds on a heartbeat that its job was taken cancels its handler and does not ack.

Stop (SIGTERM): no new reads; running jobs get `drain_timeout` to finish and are acknowledged; the
ones still running then are cancelled unacknowledged, for another worker to reclaim.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.core.metrics import Histogram
from workers.queue.config import QueueConfig, WorkerConfig
from workers.queue.job import Job, JobDecodeError, decode_job, encode_job
from workers.queue.policy import DeadLetter, after_failure
from workers.queue.scripts import (
    DEAD, FINISH, GATE, GROUP, HEARTBEAT, PROMOTE, RETRY, SKIP, QueueKeys, limits_key,
)

__all__ = ["Handler", "JobContext", "Worker", "load_handler"]

log = logging.getLogger("tierproxy.queue")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# How long a finished job's ack is retried while Redis is unreachable (it restarts, say); after
# that the job is left pending and another worker reruns it: at-least-once.
SETTLE_RETRY = 60.0
PROMOTE_BATCH = 500


@dataclass(slots=True)
class JobContext:
    """What a handler gets beside its job: the worker's Redis client and who is running it."""

    redis: aioredis.Redis
    consumer: str
    message_id: str


Handler = Callable[[Job, JobContext], Awaitable[Any]]


def load_handler(path: str) -> Handler:
    """'package.module:function' or 'package.module.function' -> the function."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj


@dataclass(slots=True)
class Running:
    queue: str
    message_id: str
    task: asyncio.Task[None]
    lost: bool = False


@dataclass(slots=True)
class QueueCounters:
    """This process's own counts (the queue-wide ones live in Redis: QueueClient.stats)."""

    duration: Histogram = field(default_factory=Histogram)
    done: int = 0
    failed: int = 0
    lost: int = 0


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class Worker:
    def __init__(self, cfg: WorkerConfig, consumer: str, redis: aioredis.Redis,
                 handlers: dict[str, Handler] | None = None) -> None:
        self.cfg = cfg
        self.consumer = consumer
        self.redis = redis
        self.keys = {name: QueueKeys(cfg.prefix, name) for name in cfg.queues}
        self.handlers = handlers if handlers is not None else {
            name: load_handler(q.handler) for name, q in cfg.queues.items()}
        self.counters = {name: QueueCounters() for name in cfg.queues}
        self.running: dict[str, Running] = {}  # message id -> job being run
        self._stopping = asyncio.Event()
        self._slot = asyncio.Event()
        self._s_finish = redis.register_script(FINISH)
        self._s_skip = redis.register_script(SKIP)
        self._s_retry = redis.register_script(RETRY)
        self._s_dead = redis.register_script(DEAD)
        self._s_promote = redis.register_script(PROMOTE)
        self._s_heartbeat = redis.register_script(HEARTBEAT)
        self._s_gate = redis.register_script(GATE)
        self._last_reclaim = 0.0
        self.paused: str | None = None  # why reading is paused (backpressure), None while running
        self.on_ready: Callable[[], object] | None = None  # called once, when Redis first answered

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("draining: no new jobs, %d running", len(self.running))
        self._stopping.set()
        self._slot.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeats())
        try:
            await self._read_loop()
            await self._drain()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            try:
                await self.redis.hdel(f"{self.cfg.prefix}:workers", self.consumer)
            except REDIS_ERRORS:
                pass

    async def _drain(self) -> None:
        tasks = [r.task for r in self.running.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.cfg.drain_timeout)
            for t in pending:  # left unacknowledged: another worker reclaims them
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("stopped")

    async def _ensure_groups(self) -> None:
        for k in self.keys.values():
            try:
                # From id 0: jobs enqueued before any worker existed are read too.
                await self.redis.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read_loop(self) -> None:
        pause = 0.05
        groups_ok = False
        while not self.stopping:
            try:
                if not groups_ok:
                    await self._ensure_groups()
                    await self.redis.hset(limits_key(self.cfg.prefix), mapping={
                        name: q.max_length for name, q in self.cfg.queues.items()})
                    groups_ok = True
                    log.info("ready: consumer %s, queues %s", self.consumer, ", ".join(self.keys))
                    if self.on_ready is not None:
                        self.on_ready()
                        self.on_ready = None
                await self._read_once()
                pause = 0.05
            except REDIS_ERRORS as exc:
                log.warning("redis unavailable: %s; retrying in %.2fs", exc, pause)
                await self._pause(pause)
                pause = min(pause * 2, 2.0)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                groups_ok = False  # Redis lost its data (no AOF): recreate the groups

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def set_paused(self, reason: str | None) -> None:
        """Backpressure (pressure.py): while paused no new jobs are read or reclaimed; running ones go on."""
        if reason != self.paused:
            if reason:
                log.warning("paused: %s", reason)
            else:
                log.info("resumed")
        self.paused = reason

    async def _read_once(self) -> None:
        if self.paused:
            await self._maintain(0)
            await self._pause(self.cfg.poll_interval)
            return
        free = self.cfg.concurrency - len(self.running)
        if free <= 0:
            self._slot.clear()
            try:
                await asyncio.wait_for(self._slot.wait(), self.cfg.poll_interval)
            except asyncio.TimeoutError:
                pass
            free = self.cfg.concurrency - len(self.running)
            if free <= 0 or self.stopping:
                await self._maintain(0)
                return
        await self._maintain(free)
        free = self.cfg.concurrency - len(self.running)
        if free <= 0 or self.stopping:
            return
        streams = {k.stream: ">" for k in self.keys.values()}
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, streams, count=free, block=max(1, int(self.cfg.poll_interval * 1000)))
        by_stream = {k.stream: name for name, k in self.keys.items()}
        for stream, messages in reply or []:
            queue = by_stream[_s(stream)]
            for mid, fields in messages:
                self._start(queue, _s(mid), fields)

    async def _maintain(self, free: int) -> None:
        """Move due delayed jobs to their streams, note we live, and reclaim dead workers' jobs."""
        now = time.time()
        for k in self.keys.values():
            await self._s_promote(keys=[k.delayed, k.stream], args=[int(now * 1000), PROMOTE_BATCH])
        await self.redis.hset(f"{self.cfg.prefix}:workers", self.consumer, repr(now))
        if free <= 0 or time.monotonic() - self._last_reclaim < self.cfg.visibility_timeout / 4:
            return
        self._last_reclaim = time.monotonic()
        vt_ms = int(self.cfg.visibility_timeout * 1000)
        for name, k in self.keys.items():
            free = self.cfg.concurrency - len(self.running)
            if free <= 0 or self.stopping:
                return
            reply = await self.redis.xautoclaim(k.stream, GROUP, self.consumer, vt_ms, "0-0", count=free)
            for mid, fields in reply[1]:
                if fields is None:
                    continue
                mid = _s(mid)
                log.warning("reclaimed %s %s (its worker stopped heartbeating)", name, mid)
                self._start(name, mid, fields, reclaimed=True)

    def _start(self, queue: str, mid: str, fields: dict[Any, Any], reclaimed: bool = False) -> None:
        task = asyncio.create_task(self._run_job(queue, mid, fields, reclaimed))
        self.running[mid] = Running(queue, mid, task)
        task.add_done_callback(lambda _t, mid=mid: self._done(mid))

    def _done(self, mid: str) -> None:
        self.running.pop(mid, None)
        self._slot.set()

    # -- heartbeats ------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat)
            try:
                await self._heartbeat_once()
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _heartbeat_once(self) -> None:
        for run in list(self.running.values()):
            k = self.keys[run.queue]
            ok = await self._s_heartbeat(keys=[k.stream], args=[GROUP, self.consumer, run.message_id])
            if not ok and not run.task.done():
                # Another worker reclaimed it (we stalled past the visibility timeout): stop ours.
                log.warning("lost the claim on %s %s: cancelling it", run.queue, run.message_id)
                run.lost = True
                self.counters[run.queue].lost += 1
                run.task.cancel()

    # -- one job ---------------------------------------------------------------------------

    async def _run_job(self, queue: str, mid: str, fields: dict[Any, Any], reclaimed: bool) -> None:
        try:
            await self._run_job_inner(queue, mid, fields, reclaimed)
        except REDIS_ERRORS as exc:
            # Before the handler ran (reading the ledger, say): left pending, reclaimed and rerun.
            log.warning("%s %s: redis unavailable (%s): left for reclaim", queue, mid, exc)
        except Exception:
            log.exception("%s %s: worker error: left for reclaim", queue, mid)

    async def _run_job_inner(self, queue: str, mid: str, fields: dict[Any, Any], reclaimed: bool) -> None:
        qcfg = self.cfg.queues[queue]
        k = self.keys[queue]
        raw = fields.get(b"job", fields.get("job", b""))
        raw = raw.encode() if isinstance(raw, str) else raw
        try:
            job = decode_job(raw)
        except JobDecodeError as exc:
            log.error("%s %s: undecodable, dead-lettered: %s", queue, mid, exc)
            await self._settle(self._s_dead, [k.stream, k.counts, k.dead, "", k.parked, k.durations],
                               [GROUP, self.consumer, mid, raw, f"undecodable: {exc}", "", ""])
            return
        if reclaimed and await self._crash_looping(k, mid, qcfg):
            log.error("%s %s: its workers died %d+ times running it: dead-lettered", queue, mid,
                      qcfg.max_attempts)
            failed = job.failed("worker died while running it")
            await self._settle(
                self._s_dead, [k.stream, k.counts, k.dead, k.order(job.order_key), k.parked, k.durations], [
                    GROUP, self.consumer, mid, encode_job(failed), f"{qcfg.max_attempts} workers died running it",
                    job.id, ""])
            return
        if job.key is not None:
            state = await self.redis.hget(k.ledger, job.key)
            if state is not None and _s(state).startswith("done:"):
                await self._settle(self._s_skip, [k.stream, k.counts, k.order(job.order_key), k.parked],
                                   [GROUP, self.consumer, mid, job.id])
                return
        if job.order_key is not None:
            # Per-key ordering: not before the earlier jobs of its order key; parked otherwise,
            # and put back into the stream by the script that settles its predecessor.
            if await self._s_gate(keys=[k.stream, k.order(job.order_key), k.parked],
                                  args=[GROUP, self.consumer, mid, job.id, raw]) != 1:
                return
        ctx = JobContext(self.redis, self.consumer, mid)
        started = time.monotonic()
        try:
            await self.handlers[queue](job, ctx)
        except asyncio.CancelledError:
            raise  # shutdown past drain_timeout or a lost claim: not acknowledged, rerun elsewhere
        except Exception as exc:
            took = time.monotonic() - started
            self.counters[queue].failed += 1
            self.counters[queue].duration.observe(took)
            await self._failed(k, qcfg, mid, job, exc, took)
            return
        took = time.monotonic() - started
        self.counters[queue].duration.observe(took)
        ok = await self._settle(
            self._s_finish, [k.stream, k.counts, k.ledger, k.order(job.order_key), k.parked, k.durations],
            [GROUP, self.consumer, mid, job.key or "", job.id, f"{took:.6f}"])
        if ok:
            self.counters[queue].done += 1

    async def _crash_looping(self, k: QueueKeys, mid: str, qcfg: QueueConfig) -> bool:
        info = await self.redis.xpending_range(k.stream, GROUP, min=mid, max=mid, count=1)
        # Each delivery that ended in a reclaim was a worker dying (or freezing) with this job.
        return bool(info) and int(info[0]["times_delivered"]) > qcfg.max_attempts

    async def _failed(self, k: QueueKeys, qcfg: QueueConfig, mid: str, job: Job, exc: Exception,
                      took: float) -> None:
        failed = job.failed(f"{type(exc).__name__}: {exc}")
        decision = after_failure(failed.attempt, qcfg.retry, random.random())
        if isinstance(decision, DeadLetter):
            log.warning("%s %s: %s (%s): dead-lettered", k.queue, job.id, failed.error, decision.reason)
            await self._settle(self._s_dead, [k.stream, k.counts, k.dead, k.order(job.order_key), k.parked,
                                              k.durations],
                               [GROUP, self.consumer, mid, encode_job(failed), decision.reason, job.id, f"{took:.6f}"])
        else:
            log.info("%s %s: %s: retry %d in %.2fs", k.queue, job.id, failed.error, failed.attempt + 1,
                     decision.delay)
            due = int((time.time() + decision.delay) * 1000)
            await self._settle(self._s_retry, [k.stream, k.counts, k.delayed, k.durations],
                               [GROUP, self.consumer, mid, encode_job(failed), due, f"{took:.6f}"])

    async def _settle(self, script: Any, keys: list[str], args: list[Any]) -> bool:
        """Run a settling script, retrying while Redis is unreachable; False if not ours any more."""
        deadline = time.monotonic() + SETTLE_RETRY
        pause = 0.05
        while True:
            try:
                return bool(await script(keys=keys, args=args))
            except REDIS_ERRORS as exc:
                if time.monotonic() > deadline:
                    log.error("could not settle %s: %s; it will be reclaimed and rerun", args[2], exc)
                    return False
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
