"""The producer API and the operator's view of the queues (stats, dead-letter stream).

    q = QueueClient(redis.asyncio.from_url(url))
    job_id = await q.enqueue("thumbnail", {"note": 42}, key="note:42", delay=5.0)

`enqueue` returns once Redis has the job (with appendonly on, `appendfsync always` makes that a
promise across a Redis crash). It raises `QueueFull` when the queue holds `max_length` unfinished
jobs (or waits for room with `wait=`), and returns the first job's id for a key already seen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from workers.queue.job import Job, JobDecodeError, decode_job, encode_job, valid_queue_name
from workers.queue.scripts import ENQUEUE, GROUP, RELEASE_LOST_HEADS, REPLAY, QueueKeys, limits_key, registry_key

__all__ = ["DeadEntry", "QueueClient", "QueueFull", "QueueStats"]


class QueueFull(Exception):
    """The queue is at its length limit; the job was not enqueued."""

    def __init__(self, queue: str, length: int, limit: int) -> None:
        self.queue, self.length, self.limit = queue, length, limit
        super().__init__(f"queue {queue!r} is full: {length} unfinished jobs, limit {limit}")


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    depth: int  # ready, not yet taken by a worker
    delayed: int  # not due yet (delayed jobs and retries in backoff)
    in_flight: int  # taken by a worker, not acknowledged
    done: int
    retries: int
    dead: int  # dead-lettered in all (`dead_now` are still in the dead-letter stream)
    dead_now: int
    skipped: int  # duplicates of a done idempotency key, acknowledged without a run
    parked: int  # delivered before their order key's earlier jobs finished, waiting their turn
    oldest_age: float  # seconds since the oldest unfinished entry entered the stream (0 if none)
    # Handler run time (every run that was settled: succeeded, retried or dead-lettered), as the
    # workers' settling scripts add it up: queue-wide, and per worker process (consumer name).
    handler_duration_count: int = 0
    handler_duration_sum: float = 0.0
    handler_duration_by_worker: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def handler_duration_avg(self) -> float:
        return self.handler_duration_sum / self.handler_duration_count if self.handler_duration_count else 0.0

    def as_dict(self) -> dict[str, Any]:
        doc = {f: getattr(self, f) for f in self.__slots__}
        doc["handler_duration_avg"] = self.handler_duration_avg
        return doc


@dataclass(frozen=True, slots=True)
class DeadEntry:
    id: str  # the dead-letter stream's entry id
    reason: str
    job: Job | None  # None when the entry could not be decoded
    raw: bytes


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _durations(h: dict[str, str]) -> dict[str, Any]:
    """The durations hash (count:C, sum:C per consumer C) -> QueueStats' handler_duration_* fields
    (the queue's count and sum are the consumers' added up)."""
    by: dict[str, dict[str, float]] = {}
    for name, value in h.items():
        kind, _, consumer = name.partition(":")
        if consumer and kind in ("count", "sum"):
            by.setdefault(consumer, {"count": 0, "sum": 0.0})[kind] = int(value) if kind == "count" else float(value)
    return {"handler_duration_count": int(sum(d["count"] for d in by.values())),
            "handler_duration_sum": sum(d["sum"] for d in by.values()),
            "handler_duration_by_worker": dict(sorted(by.items()))}


class QueueClient:
    def __init__(self, redis: aioredis.Redis, *, prefix: str = "tq", max_length: int = -1) -> None:
        self.redis = redis
        self.prefix = prefix
        # Default for enqueue: 0 = no limit, < 0 = the queue's max_length that workers published.
        self.max_length = max_length
        self._enqueue = redis.register_script(ENQUEUE)
        self._replay = redis.register_script(REPLAY)
        self._release = redis.register_script(RELEASE_LOST_HEADS)

    def keys(self, queue: str) -> QueueKeys:
        if not valid_queue_name(queue):
            raise ValueError(f"bad queue name {queue!r}")
        return QueueKeys(self.prefix, queue)

    async def enqueue(
        self, queue: str, payload: Any, *, key: str | None = None, delay: float = 0.0,
        max_length: int | None = None, wait: float = 0.0, order_key: str | None = None,
    ) -> str:
        """Add a job; returns its id (for a key already seen: the first job's id, nothing added).

        `order_key`: jobs enqueued with the same order key run one at a time, in enqueue order
        (a job does not start before the previous one with its order key finished or died).

        `wait` > 0: when the queue is full, poll for room up to that many seconds before raising.
        """
        k = self.keys(queue)
        limit = self.max_length if max_length is None else max_length
        job = Job(id=uuid.uuid4().hex, queue=queue, payload=payload, key=key, enqueued_at=time.time(),
                  order_key=order_key)
        data = encode_job(job)
        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            now_ms = int(time.time() * 1000)
            due_ms = now_ms + int(delay * 1000) if delay > 0 else 0
            reply = await self._enqueue(
                keys=[k.stream, k.delayed, k.ledger, registry_key(self.prefix), limits_key(self.prefix),
                      k.parked, k.order(order_key)],
                args=[data, key or "", due_ms, now_ms, limit, queue, job.id, order_key or ""],
            )
            status, value = _s(reply[0]), _s(reply[1])
            if status == "ok":
                return job.id
            if status == "dup":
                return value.partition(":")[2]
            if time.monotonic() >= deadline:
                raise QueueFull(queue, int(value), int(reply[2]))
            await asyncio.sleep(pause)  # backpressure: the producer waits for workers to catch up
            pause = min(pause * 2, 0.5)

    async def queues(self) -> list[str]:
        return sorted(_s(q) for q in await self.redis.smembers(registry_key(self.prefix)))

    async def stats(self, queue: str) -> QueueStats:
        k = self.keys(queue)
        async with self.redis.pipeline(transaction=True) as p:
            p.xlen(k.stream).zcard(k.delayed).xlen(k.dead).hgetall(k.counts)
            p.xrange(k.stream, count=1).time().hlen(k.parked).hgetall(k.durations)
            length, delayed, dead_now, counts, first, now, parked, durations = await p.execute()
        try:
            in_flight = int((await self.redis.xpending(k.stream, GROUP))["pending"])
        except aioredis.ResponseError:  # no group yet: no worker has read this queue
            in_flight = 0
        counts = {_s(a): int(b) for a, b in counts.items()}
        oldest = 0.0
        if first:
            ms = int(_s(first[0][0]).split("-")[0])
            oldest = max(0.0, now[0] + now[1] / 1e6 - ms / 1000)
        return QueueStats(
            queue=queue, depth=max(0, length - in_flight), delayed=delayed, in_flight=in_flight,
            done=counts.get("done", 0), retries=counts.get("retries", 0), dead=counts.get("dead", 0),
            dead_now=dead_now, skipped=counts.get("skipped", 0), parked=parked, oldest_age=oldest,
            **_durations({_s(a): _s(b) for a, b in durations.items()}),
        )

    # -- the dead-letter stream ------------------------------------------------------------

    async def dead(self, queue: str, count: int = 100) -> list[DeadEntry]:
        entries = await self.redis.xrange(self.keys(queue).dead, count=count)
        return [self._dead_entry(eid, fields) for eid, fields in entries]

    async def dead_entry(self, queue: str, entry_id: str) -> DeadEntry | None:
        entries = await self.redis.xrange(self.keys(queue).dead, min=entry_id, max=entry_id)
        return self._dead_entry(*entries[0]) if entries else None

    @staticmethod
    def _dead_entry(eid: bytes | str, fields: dict[Any, Any]) -> DeadEntry:
        f = {_s(a): b for a, b in fields.items()}
        raw = f.get("job", b"")
        raw = raw.encode() if isinstance(raw, str) else raw
        try:
            job: Job | None = decode_job(raw)
        except JobDecodeError:
            job = None
        return DeadEntry(id=_s(eid), reason=_s(f.get("reason", b"")), job=job, raw=raw)

    async def replay(self, queue: str, entry_id: str) -> bool:
        """Send a dead job back to its queue with fresh attempts; False if no such entry."""
        k = self.keys(queue)
        entry = await self.dead_entry(queue, entry_id)
        if entry is None or entry.job is None:
            return False
        job = entry.job.replayed()
        # One script: out of the dead-letter stream, into the stream and its order key's line.
        return bool(await self._replay(keys=[k.stream, k.dead, k.order(job.order_key)],
                                       args=[entry_id, encode_job(job), job.id]))

    async def drop(self, queue: str, entry_id: str) -> bool:
        return bool(await self.redis.xdel(self.keys(queue).dead, entry_id))

    # -- per-key ordering lines ------------------------------------------------------------

    async def order_keys(self, queue: str) -> list[str]:
        """The order keys that have unfinished jobs in `queue` (their lines exist)."""
        k = self.keys(queue)
        prefix = k.order("x")[:-1]
        found = [_s(name)[len(prefix):] async for name in self.redis.scan_iter(match=prefix + "*", count=1000)]
        return sorted(found)

    async def release_lost_heads(self, queue: str, order_key: str) -> tuple[list[str], str]:
        """Pop the ids heading `order_key`'s line whose jobs were lost (in no stream, delayed set or
        parked hash: nothing would ever settle them) until a live job heads it; a parked head is
        put back into the stream. Returns (the released ids, the head's state now: "stream",
        "delayed", "unparked" or "empty")."""
        k = self.keys(queue)
        reply = [_s(v) for v in await self._release(keys=[k.order(order_key), k.stream, k.delayed, k.parked])]
        return reply[:-2], reply[-1]
