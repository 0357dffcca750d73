"""Handlers the queue tests' worker processes import by dotted path (tests.integration.queue_handlers:run).

Every effect is written to the same Redis the queue uses, so the test reads what really happened:
    t:starts   one entry "<job id> <consumer>" per handler start
    t:effects  one entry "<job id> <unix time>" per handler that got to its end
Payload knobs: {"sleep": s} runs s seconds; {"hold": name} runs until key t:release:<name> exists;
{"poison": true} raises until key t:cured exists.
Per-key ordering: {"seq": n} (with the job's order_key) records "start K n" / "end K n" in t:order
around the run, and {"fail_once": true} makes its first run raise (recording "fail K n").
"""

from __future__ import annotations

import asyncio
import time

from workers.queue.job import Job
from workers.queue.worker import JobContext


async def run(job: Job, ctx: JobContext) -> None:
    p = job.payload if isinstance(job.payload, dict) else {}
    r = ctx.redis
    await r.rpush("t:starts", f"{job.id} {ctx.consumer}")
    seq = p.get("seq")
    if seq is not None:
        await r.rpush("t:order", f"start {job.order_key} {seq}")
    if p.get("sleep"):
        await asyncio.sleep(p["sleep"])
    if p.get("hold"):
        while not await r.exists(f"t:release:{p['hold']}"):
            await asyncio.sleep(0.02)
    if p.get("poison") and not await r.exists("t:cured"):
        raise RuntimeError("poison message")
    if seq is not None:
        if p.get("fail_once") and await r.setnx(f"t:failed:{job.id}", 1):
            await r.rpush("t:order", f"fail {job.order_key} {seq}")
            raise RuntimeError("first run fails")
        await r.rpush("t:order", f"end {job.order_key} {seq}")
    await r.rpush("t:effects", f"{job.id} {time.time()!r}")


async def effect_once(job: Job, ctx: JobContext) -> None:
    """The soak's handler: its effect is keyed by the job's idempotency key (HSETNX), so a rerun
    after a crash between effect and acknowledgement is counted in t:reruns, not applied twice."""
    if not await ctx.redis.hsetnx("t:effect", job.key or job.id, ctx.consumer):
        await ctx.redis.incr("t:reruns")
