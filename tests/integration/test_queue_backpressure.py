"""Queue workers pause while a real dbproxy's /status says its primary is not usable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from proxy.devstack.poll import wait_until_async
from proxy.devstack.redis import RedisServer, start_redis_async
from tests.integration.queueproc import Workers, write_config
from workers.queue import QueueClient

WAIT = 60.0


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[RedisServer]:
    s = await start_redis_async(log_dir=tmp_path / "redis")
    try:
        yield s
    finally:
        await s.close_async()


async def test_worker_pauses_while_the_primary_is_down(tmp_path, server, pg_cluster_factory, dbproxy_factory) -> None:
    cluster = await asyncio.to_thread(pg_cluster_factory, 0)
    proxy = await asyncio.to_thread(dbproxy_factory, cluster)
    r = aioredis.from_url(server.url, decode_responses=True)
    tables = (f'[backpressure]\nstatus_url = "http://127.0.0.1:{proxy.admin_port}/status"\n'
              "interval = 0.2\n")
    w = Workers(tmp_path / "logs", write_config(tmp_path / "bp.toml", server.url, tables=tables), r)
    try:
        proc = await w.start("a")
        q = QueueClient(r)
        first = await q.enqueue("jobs", {})
        await wait_until_async(lambda: _len(r, "t:effects", 1), WAIT, "job run while healthy")
        cluster.primary.pause()  # SIGSTOP (postmaster and backends): the dbproxy's monitor times out
        try:
            await wait_until_async(lambda: _log_has(proc, "paused: primary"), WAIT, "worker paused")
            # A pause holds from the worker's next loop pass (a read already blocking may still
            # take a job): one pass (it stamps tq:workers each time), then the job, then two more.
            await _loop_pass(r)
            second = await q.enqueue("jobs", {})
            await _loop_pass(r)
            await _loop_pass(r)
            assert await r.lrange("t:starts", 0, -1) == [f"{first} a"]
            assert (await q.stats("jobs")).depth == 1
        finally:
            cluster.primary.resume()
        await wait_until_async(lambda: _log_has(proc, "resumed"), WAIT, "worker resumed")
        effects = await wait_until_async(lambda: _len(r, "t:effects", 2), WAIT, "job run after resume")
        assert [e.split()[0] for e in effects] == [first, second]
    finally:
        w.close()
        await r.aclose()


async def _len(r: aioredis.Redis, key: str, n: int) -> list[str] | None:
    items = await r.lrange(key, 0, -1)
    return items if len(items) >= n else None


async def _loop_pass(r: aioredis.Redis) -> None:
    stamp = float(await r.hget("tq:workers", "a"))
    await wait_until_async(lambda: _stamp_after(r, stamp), WAIT, "a pass of the worker's loop")


async def _stamp_after(r: aioredis.Redis, stamp: float) -> bool:
    return float(await r.hget("tq:workers", "a")) > stamp


async def _log_has(proc, text: str) -> bool:
    return text in proc.log_tail(300)
