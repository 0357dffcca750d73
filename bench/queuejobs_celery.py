"""The bench's two jobs as Celery tasks on a Redis broker (`celery -A bench.queuejobs_celery worker`).

Configured from `BENCH_QUEUE_REDIS`: no result backend (nothing is stored per job, like the other
systems), `task_acks_late` (acknowledged after the task ran: at-least-once, what tierproxy queue
does), the default prefetch multiplier. Sync tasks: Celery runs them in its thread pool, and the
1 ms job sleeps with time.sleep.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from bench.queuejobs import DONE_KEY

__all__ = ["app", "noop", "sleep1ms"]

URL = os.environ.get("BENCH_QUEUE_REDIS", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=URL)
app.conf.update(task_ignore_result=True, task_acks_late=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, task_default_queue="bench")  # fmt: skip
_redis = redis.Redis.from_url(URL)  # thread-safe: a connection pool shared by the pool's threads


@app.task(name="noop")
def noop() -> None:
    _redis.incr(DONE_KEY)


@app.task(name="sleep1ms")
def sleep1ms() -> None:
    time.sleep(0.001)
    _redis.incr(DONE_KEY)
