"""The jobs `python -m bench queue` runs, as tierproxy queue handlers (bench/jobqueue.py).

Every job of every system does the same thing: an INCR of `bench:done` on the Redis the queue uses
(how the harness sees jobs finish), after nothing ("noop") or after a 1 ms sleep ("sleep1ms").
The Celery and arq versions of the same two jobs are in queuejobs_celery.py and queuejobs_arq.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["DONE_KEY", "noop", "sleep1ms"]

DONE_KEY = "bench:done"


async def noop(job: Any, ctx: Any) -> None:
    await ctx.redis.incr(DONE_KEY)


async def sleep1ms(job: Any, ctx: Any) -> None:
    await asyncio.sleep(0.001)
    await ctx.redis.incr(DONE_KEY)
