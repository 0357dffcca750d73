"""The Redis Streams queue (workers/queue) with real redis-server and real worker processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.devstack.poll import wait_until_async
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import ManagedProcess
from proxy.devstack.redis import RedisServer
from tests.integration import queueproc
from tests.integration.queueproc import Workers, cli, write_config
from workers.queue import QueueClient, QueueFull

WAIT = 60.0

server, r = queueproc.server, queueproc.r


@pytest.fixture
async def workers(tmp_path, server, r) -> AsyncIterator[Workers]:
    w = Workers(tmp_path / "logs", write_config(tmp_path / "queue.toml", server.url), r)
    try:
        yield w
    finally:
        w.close()


async def _list(r: aioredis.Redis, key: str) -> list[str]:
    return await r.lrange(key, 0, -1)


async def _until_len(r: aioredis.Redis, key: str, n: int, what: str) -> list[str]:
    async def check() -> list[str] | None:
        items = await _list(r, key)
        return items if len(items) >= n else None
    return await wait_until_async(check, WAIT, what)


async def test_sigkill_mid_job_runs_again_on_another_worker_once(workers, r) -> None:
    q = QueueClient(r)
    await workers.start("a")
    job_id = await q.enqueue("jobs", {"hold": "k"})
    starts = await _until_len(r, "t:starts", 1, "job started on a")
    assert starts == [f"{job_id} a"]
    workers.procs["a"].kill()  # SIGKILL mid-job: no ack, no goodbye
    await workers.start("b")
    starts = await _until_len(r, "t:starts", 2, "job reclaimed by b")
    assert starts[1] == f"{job_id} b"
    await r.set("t:release:k", 1)
    effects = await _until_len(r, "t:effects", 1, "job done")
    assert [e.split()[0] for e in effects] == [job_id]
    stats = await wait_until_async(lambda: _stats_when(q, done=1), WAIT, "acked")
    assert (stats.in_flight, stats.depth, stats.dead) == (0, 0, 0)
    assert await _list(r, "t:starts") == starts[:2]  # run exactly twice: a (killed) and b


async def _stats_when(q: QueueClient, **want: int):
    s = await q.stats("jobs")
    return s if all(getattr(s, k) == v for k, v in want.items()) else None


async def test_job_five_times_the_visibility_timeout_runs_once(workers, r) -> None:
    q = QueueClient(r)
    # visibility 2 s, heartbeats every 0.67 s; the job runs 10 s while b reclaims every 0.5 s.
    await workers.start("a")
    job_id = await q.enqueue("jobs", {"sleep": 10.0})
    await _until_len(r, "t:starts", 1, "job started")
    await workers.start("b")
    await _until_len(r, "t:effects", 1, "long job done")
    await wait_until_async(lambda: _stats_when(q, done=1, in_flight=0), WAIT, "acked")
    assert await _list(r, "t:starts") == [f"{job_id} a"]
    assert len(await _list(r, "t:effects")) == 1


async def test_poison_message_is_dead_lettered_then_replayed(workers, r, server) -> None:
    q = QueueClient(r)
    await workers.start("a")
    job_id = await q.enqueue("jobs", {"poison": True})
    stats = await wait_until_async(lambda: _stats_when(q, dead=1), WAIT, "dead-lettered")
    assert (stats.retries, stats.in_flight, stats.depth, stats.delayed, stats.done) == (2, 0, 0, 0, 0)
    assert len(await _list(r, "t:starts")) == 3  # max_attempts = 3
    listed = cli(server, "dlq", "list", "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["job"]["id"] for e in entries] == [job_id]
    assert entries[0]["job"]["attempt"] == 3 and "poison message" in entries[0]["job"]["error"]
    shown = cli(server, "dlq", "show", "jobs", entries[0]["entry"])
    assert json.loads(shown.stdout)["job"]["id"] == job_id
    await r.set("t:cured", 1)
    replay = cli(server, "dlq", "replay", "jobs", entries[0]["entry"])
    assert replay.returncode == 0, replay.stderr
    effects = await _until_len(r, "t:effects", 1, "replayed job done")
    assert effects[0].split()[0] == job_id
    s = cli(server, "stats", "--json")
    doc = json.loads(s.stdout)["queues"]["jobs"]
    assert {k: doc[k] for k in ("depth", "in_flight", "done", "retries", "dead")} == {
        "depth": 0, "in_flight": 0, "done": 1, "retries": 2, "dead": 1}
    assert doc["dead_now"] == 0
    missing = cli(server, "dlq", "drop", "jobs", entries[0]["entry"])
    assert missing.returncode == 1


async def test_idempotency_key_runs_the_effect_once(workers, r) -> None:
    q = QueueClient(r)
    first = await q.enqueue("jobs", {}, key="note:1")
    assert await q.enqueue("jobs", {}, key="note:1") == first  # while queued
    await workers.start("a")
    await _until_len(r, "t:effects", 1, "job done")
    await wait_until_async(lambda: _stats_when(q, done=1), WAIT, "acked")
    assert await q.enqueue("jobs", {}, key="note:1") == first  # after done
    other = await q.enqueue("jobs", {}, key="note:2")
    effects = await _until_len(r, "t:effects", 2, "second key done")
    assert sorted(e.split()[0] for e in effects) == sorted([first, other])
    await wait_until_async(lambda: _stats_when(q, done=2, in_flight=0, depth=0), WAIT, "all acked")


async def test_delayed_job_waits_for_its_time(workers, r) -> None:
    q = QueueClient(r)
    await workers.start("a")


    before = time.time()
    late = await q.enqueue("jobs", {}, delay=2.0)
    now = await q.enqueue("jobs", {})
    effects = await _until_len(r, "t:effects", 2, "both done")
    assert [e.split()[0] for e in effects] == [now, late]
    assert float(effects[1].split()[1]) >= before + 2.0


async def test_sigterm_finishes_the_running_job_and_takes_no_new_one(tmp_path, server, r) -> None:
    cfg = write_config(tmp_path / "one.toml", server.url, concurrency=1)
    w = Workers(tmp_path / "logs", cfg, r)
    try:
        q = QueueClient(r)
        proc = await w.start("a")
        running = await q.enqueue("jobs", {"hold": "t"})
        await _until_len(r, "t:starts", 1, "job started")
        proc.send_terminate()
        await wait_until_async(lambda: _log_has(proc, "draining"), WAIT, "worker draining")
        waiting = await q.enqueue("jobs", {})
        await r.set("t:release:t", 1)
        assert await asyncio.to_thread(proc._popen.wait, WAIT) == 0
        assert [e.split()[0] for e in await _list(r, "t:effects")] == [running]
        stats = await q.stats("jobs")
        assert (stats.done, stats.in_flight, stats.depth) == (1, 0, 1)
        assert waiting not in "".join(await _list(r, "t:starts"))
    finally:
        w.close()


async def _log_has(proc, text: str) -> bool:
    return text in proc.log_tail(200)


async def test_length_limit_gives_the_producer_a_clear_error(r) -> None:
    q = QueueClient(r, max_length=2)
    await q.enqueue("jobs", {})
    await q.enqueue("jobs", {}, delay=60)
    with pytest.raises(QueueFull) as exc:
        await q.enqueue("jobs", {})
    assert (exc.value.length, exc.value.limit) == (2, 2) and "full" in str(exc.value)


async def test_length_limit_from_the_workers_config(tmp_path, server, r) -> None:
    # The held jobs never end: a short drain lets close() stop the worker at once instead of
    # SIGTERM waiting out the 10 s before its SIGKILL.
    w = Workers(tmp_path / "logs", write_config(tmp_path / "l.toml", server.url, max_length=3, drain_timeout=0.5), r)
    try:
        await w.start("a")
        q = QueueClient(r)
        for _ in range(3):
            await q.enqueue("jobs", {"hold": "never"})
        with pytest.raises(QueueFull) as exc:
            await q.enqueue("jobs", {})
        assert exc.value.limit == 3
        assert await q.enqueue("jobs", {}, max_length=0)  # the caller's own limit wins
    finally:
        w.close()


async def test_undecodable_entry_goes_to_the_dead_letter_stream(workers, r) -> None:
    q = QueueClient(r)
    await workers.start("a")
    await r.xadd("tq:{jobs}:stream", {"job": "not json"})
    await wait_until_async(lambda: _stats_when(q, dead=1, in_flight=0), WAIT, "dead-lettered")
    [entry] = await q.dead("jobs")
    assert entry.job is None and entry.raw == b"not json" and "undecodable" in entry.reason
    assert await _list(r, "t:starts") == []


async def test_metrics_per_queue(tmp_path, server, r) -> None:
    port = allocate_port()
    try:
        cfg = write_config(tmp_path / "m.toml", server.url, metrics=f"127.0.0.1:{port.port}")
        w = Workers(tmp_path / "logs", cfg, r)
        try:
            q = QueueClient(r)
            await w.start("a")
            await q.enqueue("jobs", {})
            await q.enqueue("jobs", {}, delay=600)
            await wait_until_async(lambda: _stats_when(q, done=1), WAIT, "done")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port.port}/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
        finally:
            w.close()
    finally:
        port.release()
    for line in ('tierproxy_queue_done_total{queue="jobs"} 1.0', 'tierproxy_queue_delayed{queue="jobs"} 1.0',
                 'tierproxy_queue_depth{queue="jobs"} 0.0', 'tierproxy_queue_in_flight{queue="jobs"} 0.0',
                 'tierproxy_queue_dead_total{queue="jobs"} 0.0', 'tierproxy_queue_retries_total{queue="jobs"} 0.0',
                 'tierproxy_queue_handler_duration_seconds_count{queue="jobs"} 1.0'):
        assert line in text, line
    assert 'tierproxy_queue_oldest_age_seconds{queue="jobs"} 0.0' in text  # the delayed job is not in the stream


async def test_redis_killed_under_load_loses_nothing_acknowledged(tmp_path, r) -> None:
    """Redis with appendfsync always, SIGKILLed and restarted on its port while a producer enqueues
    and two workers consume: every job enqueue() returned for is run (at least once)."""
    server = RedisServer.spawn(log_dir=tmp_path / "aof", extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    await server.wait_ready_async()
    client = aioredis.from_url(server.url, decode_responses=True)
    w = Workers(tmp_path / "logs", write_config(tmp_path / "q.toml", server.url), client)
    try:
        await w.start("a")
        await w.start("b")
        q = QueueClient(client)
        acked: list[str] = []
        errors = 0
        total, kill_at = 400, 150
        for i in range(total):
            if i == kill_at:
                server.process.kill()
                server.process = ManagedProcess(server.process.argv, name="redis-again", log_dir=tmp_path / "aof",
                                                cwd=server.workdir)
            while True:  # the same key again after an error: enqueued once, whatever the error hid
                try:
                    acked.append(await q.enqueue("jobs", {"i": i}, key=f"k{i}"))
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    errors += 1
                    await asyncio.sleep(0.05)
        assert errors > 0  # the kill happened under load, not between runs
        assert len(set(acked)) == total

        async def all_done() -> bool:
            ids = {e.split()[0] for e in await client.lrange("t:effects", 0, -1)}
            return set(acked) <= ids
        await wait_until_async(all_done, 90, "every acknowledged job run")
        await wait_until_async(lambda: _stats_when(q, in_flight=0, depth=0), WAIT, "queue drained")
    finally:
        w.close()
        await client.aclose()
        await server.close_async()


async def test_stats_show_handler_duration_per_queue_and_worker(tmp_path, server, r) -> None:
    """Two worker processes (one job at a time each) run one 0.3 s job each, then a poison job runs
    3 times: `stats` counts 5 handler runs with their time, queue-wide and per worker."""
    w = Workers(tmp_path / "logs", write_config(tmp_path / "d.toml", server.url, concurrency=1), r)
    try:
        q = QueueClient(r)
        await w.start("a")
        await w.start("b")
        for _ in range(2):
            await q.enqueue("jobs", {"sleep": 0.3, "hold": "d"})
        starts = await _until_len(r, "t:starts", 2, "both jobs started")
        assert sorted(s.split()[1] for s in starts) == ["a", "b"]  # one each: each runs one at a time
        await r.set("t:release:d", 1)
        await q.enqueue("jobs", {"poison": True})
        await wait_until_async(lambda: _stats_when(q, done=2, dead=1, in_flight=0), WAIT, "all settled")
        out = cli(server, "stats", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)["queues"]["jobs"]
        assert doc["handler_duration_count"] == 5  # 2 jobs + 3 runs of the poison job
        by = doc["handler_duration_by_worker"]
        assert set(by) == {"a", "b"}
        assert by["a"]["count"] + by["b"]["count"] == 5
        assert by["a"]["sum"] >= 0.3 and by["b"]["sum"] >= 0.3
        assert doc["handler_duration_sum"] == pytest.approx(by["a"]["sum"] + by["b"]["sum"])
        assert doc["handler_duration_avg"] == pytest.approx(doc["handler_duration_sum"] / 5)
        text = cli(server, "stats")
        assert text.returncode == 0, text.stderr
        rows = {tuple(line.split()[:2]): line.split() for line in text.stdout.splitlines() if line.strip()}
        assert rows[("jobs", "a")][2] == str(by["a"]["count"]) and rows[("jobs", "b")][2] == str(by["b"]["count"])
        assert text.stdout.splitlines()[0].split()[-2:] == ["runs", "avg_ms"]
    finally:
        w.close()
