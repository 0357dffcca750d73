"""Per-key ordering (`enqueue(..., order_key=K)`) with real redis-server and real worker processes.

Several workers, each running several jobs at once, get interleaved jobs of a few order keys; the
handler records "start K n" / "end K n" in Redis (tests/integration/queue_handlers.py), so the test
reads the real execution order: per key, n+1 never starts before n ended, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import random


from proxy.devstack.poll import wait_until_async
from tests.integration import queueproc
from tests.integration.queueproc import Workers, cli, write_config
from workers.queue import QueueClient

WAIT = 90.0
KEYS = ("user:1", "user:2", "user:3")
PER_KEY = 12

server, r = queueproc.server, queueproc.r


def expected_events(key: str, fails: set[int]) -> list[str]:
    """What t:order must hold for one key: each job's runs (a failed one first, if any), then the next."""
    out: list[str] = []
    for n in range(PER_KEY):
        if n in fails:
            out += [f"start {key} {n}", f"fail {key} {n}"]
        out += [f"start {key} {n}", f"end {key} {n}"]
    return out


async def test_jobs_of_one_order_key_run_one_at_a_time_in_order(tmp_path, server, r) -> None:
    w = Workers(tmp_path / "logs", write_config(tmp_path / "q.toml", server.url, concurrency=4), r)
    try:
        for name in ("a", "b", "c"):
            await w.start(name)
        q = QueueClient(r)
        rng = random.Random(21)
        fails = {key: {rng.randrange(PER_KEY)} for key in KEYS}  # one retry (backoff) inside each line
        for n in range(PER_KEY):
            for key in KEYS:
                payload = {"seq": n, "sleep": rng.choice([0.0, 0.01, 0.05]), "fail_once": n in fails[key]}
                await q.enqueue("jobs", payload, order_key=key)
        # Unordered jobs in between keep the workers busy with other work meanwhile.
        for _ in range(10):
            await q.enqueue("jobs", {"sleep": 0.02})
        total = len(KEYS) * (2 * PER_KEY + 2)

        async def all_recorded() -> list[str] | None:
            events = await r.lrange("t:order", 0, -1)
            return events if len(events) >= total else None

        events = await wait_until_async(all_recorded, WAIT, "every ordered job done")
        for key in KEYS:
            assert [e for e in events if e.split()[1] == key] == expected_events(key, fails[key]), key
        stats = await wait_until_async(
            lambda: _stats_when(q, done=len(KEYS) * PER_KEY + 10, in_flight=0, depth=0, parked=0),
            WAIT, "all acked, none parked")
        assert (stats.dead, stats.retries) == (0, len(KEYS))
        # Each key's line is empty again: nothing is left behind in Redis.
        assert [k for k in await r.keys("tq:{jobs}:order:*")] == []
        # The workers really ran jobs in parallel, not one after the other.
        consumers = {s.split()[1] for s in await r.lrange("t:starts", 0, -1)}
        assert len(consumers) >= 2
    finally:
        w.close()


async def _stats_when(q: QueueClient, **want: int):
    s = await q.stats("jobs")
    return s if all(getattr(s, k) == v for k, v in want.items()) else None


async def test_dead_job_frees_its_line_and_replay_goes_to_the_back(tmp_path, server, r) -> None:
    w = Workers(tmp_path / "logs", write_config(tmp_path / "q.toml", server.url, max_attempts=1), r)
    try:
        await w.start("a")
        q = QueueClient(r)
        await q.enqueue("jobs", {"seq": 0, "fail_once": True}, order_key="k")
        await q.enqueue("jobs", {"seq": 1}, order_key="k")

        async def recorded(n: int):
            events = await r.lrange("t:order", 0, -1)
            return events if len(events) >= n else None

        # 0 fails with max_attempts 1: dead-lettered, and 1 runs after it instead of waiting forever.
        assert await wait_until_async(lambda: recorded(4), WAIT, "1 ran") == [
            "start k 0", "fail k 0", "start k 1", "end k 1"]
        (entry,) = await q.dead("jobs")
        assert await q.replay("jobs", entry.id)
        events = await wait_until_async(lambda: recorded(6), WAIT, "replayed 0 ran")
        assert events[4:] == ["start k 0", "end k 0"]
        await wait_until_async(lambda: _stats_when(q, done=2, in_flight=0, parked=0), WAIT, "acked")
    finally:
        w.close()


async def test_order_release_frees_a_line_whose_head_job_was_lost(tmp_path, server, r) -> None:
    """Key K's first job is lost (its stream entry deleted, as an XTRIM, an eviction or a partial
    restore would): K's later jobs park behind it for ever. `tierproxy queue order release` pops the
    lost head and they run, in order; key L, whose head is running, is left alone."""
    q = QueueClient(r)
    k_ids = [await q.enqueue("jobs", {"seq": n}, order_key="K") for n in range(3)]
    await q.enqueue("jobs", {"seq": 0, "hold": "L"}, order_key="L")
    await q.enqueue("jobs", {"seq": 1}, order_key="L")
    [lost] = [eid for eid, f in await r.xrange("tq:{jobs}:stream") if f'"id":"{k_ids[0]}"' in f["job"]]
    assert await r.xdel("tq:{jobs}:stream", lost) == 1
    w = Workers(tmp_path / "logs", write_config(tmp_path / "q.toml", server.url, concurrency=4), r)
    try:
        await w.start("a")

        async def parked() -> bool:
            return (await q.stats("jobs")).parked == 3 and "start L 0" in await r.lrange("t:order", 0, -1)
        await wait_until_async(parked, WAIT, "K 1, K 2 and L 1 parked, L 0 running")
        assert await r.lrange("t:order", 0, -1) == ["start L 0"]
        out = await asyncio.to_thread(cli, server, "order", "release", "jobs")
        assert out.returncode == 0, out.stderr
        assert f"jobs K: released 1 lost head(s) {k_ids[0]}; head now: unparked" in out.stdout
        assert "2 line(s)" in out.stdout and "jobs L:" not in out.stdout

        async def k_done() -> list[str] | None:
            events = [e for e in await r.lrange("t:order", 0, -1) if " K " in e]
            return events if len(events) == 4 else None
        events = await wait_until_async(k_done, WAIT, "K 1 and K 2 run")
        assert events == ["start K 1", "end K 1", "start K 2", "end K 2"]
        assert await r.llen("tq:{jobs}:order:K") == 0
        assert (await q.stats("jobs")).parked == 1  # L 1 still waits for the running L 0
        again = await asyncio.to_thread(cli, server, "order", "release", "jobs", "L")
        assert again.returncode == 0 and again.stdout.strip() == "0 lost head(s) released in 1 line(s) of jobs"
        await r.set("t:release:L", 1)

        async def l_done() -> list[str] | None:
            events = [e for e in await r.lrange("t:order", 0, -1) if " L " in e]
            return events if len(events) == 4 else None
        assert await wait_until_async(l_done, WAIT, "L 0 and L 1 run") == [
            "start L 0", "end L 0", "start L 1", "end L 1"]
    finally:
        w.close()
