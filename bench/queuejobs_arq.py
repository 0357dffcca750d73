"""The bench's two jobs as arq functions (`arq bench.queuejobs_arq.WorkerSettings`).

From the environment: `BENCH_QUEUE_REDIS`, `BENCH_QUEUE_CONCURRENCY` (max_jobs). `keep_result = 0`
(no result stored per job, like the other systems). arq polls its queue (a sorted set) and sleeps
`poll_delay` between polls even when jobs are waiting; its default 0.5 s would cap it at
max_jobs / 0.5 s, so it is set to 1 ms here: arq's best case.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq.connections import RedisSettings

from bench.queuejobs import DONE_KEY

__all__ = ["WorkerSettings", "noop", "sleep1ms"]


async def noop(ctx: dict[str, Any]) -> None:
    await ctx["redis"].incr(DONE_KEY)


async def sleep1ms(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0.001)
    await ctx["redis"].incr(DONE_KEY)


class WorkerSettings:
    functions = [noop, sleep1ms]
    redis_settings = RedisSettings.from_dsn(os.environ.get("BENCH_QUEUE_REDIS", "redis://127.0.0.1:6379/0"))
    max_jobs = int(os.environ.get("BENCH_QUEUE_CONCURRENCY", "16"))
    keep_result = 0
    poll_delay = 0.001
    handle_signals = True
