"""POST /notes when the job queue refuses the note's summary job: a real web worker process, real
PostgreSQL (the shared `pg_cluster`'s primary, in a database of its own) and a real redis-server.

The queue at its length limit answers 429 and Redis unreachable answers 503, both with Retry-After
and nothing saved (the note is rolled back), instead of a 500 with the note saved but no job.
"""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from proxy.devstack.redis import start_redis_async
from workers.notes import SCHEMA


async def test_post_note_answers_429_when_full_and_503_when_redis_is_down(pg_cluster, web_worker_factory,
                                                                          tmp_path) -> None:
    db = f"notes_{uuid.uuid4().hex[:8]}"
    pg_cluster.primary.psql(f"CREATE DATABASE {db}")
    dsn = pg_cluster.primary.dsn_for(database=db)
    conn = await asyncpg.connect(dsn)
    redis = await start_redis_async(log_dir=tmp_path / "redis")
    r = aioredis.from_url(redis.url, decode_responses=True)
    try:
        await conn.execute(SCHEMA)
        await r.hset("tq:limits", "notes", 1)  # what a worker whose config says max_length = 1 publishes
        web = await web_worker_factory.start_async(
            "notes1", extra_args=["--database-url", dsn, "--queue-redis", redis.url])
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{web.url}/notes", data="first note") as resp:
                assert resp.status == 201, await resp.text()
                assert (await resp.json())["job"]
            async with http.post(f"{web.url}/notes", data="second note") as resp:
                assert resp.status == 429, await resp.text()
                assert resp.headers["Retry-After"] == "5"
                doc = await resp.json()
                assert doc["saved"] is False and "is full" in doc["error"]
            assert [row["body"] for row in await conn.fetch("SELECT body FROM notes")] == ["first note"]
            assert await r.xlen("tq:{notes}:stream") == 1

            await r.aclose()
            await redis.close_async()
            async with http.post(f"{web.url}/notes", data="third note") as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == "10"
                doc = await resp.json()
                assert doc["saved"] is False and "queue unavailable" in doc["error"]
            assert [row["body"] for row in await conn.fetch("SELECT body FROM notes")] == ["first note"]
            async with http.get(f"{web.url}/healthz") as resp:  # the worker keeps serving
                assert resp.status == 200
    finally:
        await conn.close()
        await r.aclose()
        await redis.close_async()
