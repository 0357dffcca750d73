"""The shared level's Lua scripts (proxy/dbproxy/qcache_redis.py) run on a real redis-server:
the protocol that gives read-your-writes across instances, step by step (issue 20)."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
import redis.asyncio as aioredis

from proxy.dbproxy.qcache_bus import SharedLevel
from proxy.dbproxy.qcache_redis import Keys, encode_entry

_PREFIXES = itertools.count()
TABLES = frozenset({"t", "u"})


@pytest.fixture
async def level(redis_server):
    seen: list[tuple[str, frozenset[str] | None]] = []
    lvl = SharedLevel(redis_server.url, prefix=f"test:qc{next(_PREFIXES)}", timeout=2.0, lease=2.0,
                      on_invalidate=lambda db, t: seen.append((db, t)), on_reset=lambda: None,
                      rng=random.Random(1))  # fmt: skip
    lvl.grace_ms = 0  # the grace after Redis lost its data is tested on its own below
    lvl.start()
    lvl.seen = seen  # type: ignore[attr-defined]
    try:
        yield lvl
    finally:
        await lvl.close()


async def _stored(level: SharedLevel, key: bytes, answer: bytes) -> bytes:
    """Look up (a miss), fill; the versions string it was stored under."""
    found = await level.lookup(key, "db", TABLES, b"")
    assert found is not None and found.answer is None and not found.busy
    assert await level.fill(key, "db", TABLES, found.versions, encode_entry(found.versions, answer), 60_000)
    return found.versions


async def test_hit_then_a_write_mark_makes_it_a_miss_and_blocks_fills_until_released(level) -> None:
    vers = await _stored(level, b"k1", b"old")
    hit = await level.lookup(b"k1", "db", TABLES, b"")
    assert hit is not None and hit.answer == b"old" and hit.versions == vers and 0 < hit.ttl_ms <= 60_000
    held = await level.lookup(b"k1", "db", TABLES, vers)  # the in-process copy is current: no bytes sent
    assert held is not None and held.answer is None and held.versions == vers
    assert await level.mark("db", frozenset({"u", "x"}), "w1")
    after = await level.lookup(b"k1", "db", TABLES, vers)
    assert after is not None and after.versions != vers and after.answer is None and after.busy
    # a read that ran while the write was marked is not stored, even with the new versions
    assert not await level.fill(b"k1", "db", TABLES, after.versions, encode_entry(after.versions, b"mid"), 60_000)
    await level.release("db", frozenset({"u", "x"}), "w1")
    done = await level.lookup(b"k1", "db", TABLES, vers)
    assert done is not None and not done.busy and done.versions not in (vers, after.versions)
    assert done.answer is None  # nothing from before or during the write is current


async def test_a_fill_whose_versions_moved_is_refused(level) -> None:
    found = await level.lookup(b"k2", "db", TABLES, b"")
    assert found is not None
    assert await level.mark("db", frozenset({"t"}), "w2")
    await level.release("db", frozenset({"t"}), "w2")
    assert not await level.fill(b"k2", "db", TABLES, found.versions, encode_entry(found.versions, b"x"), 60_000)


async def test_other_tables_are_not_touched(level) -> None:
    vers = await _stored(level, b"k3", b"v")
    assert await level.mark("db", frozenset({"z"}), "w4")
    found = await level.lookup(b"k3", "db", TABLES, b"")
    assert found is not None and found.answer == b"v" and found.versions == vers and not found.busy


async def test_a_write_to_unknown_tables_moves_the_epoch(level) -> None:
    vers = await _stored(level, b"k4", b"v")
    assert await level.mark("db", None, "w5")
    found = await level.lookup(b"k4", "db", frozenset({"q"}), b"")
    assert found is not None and found.busy  # every table is marked
    await level.release("db", None, "w5")
    found = await level.lookup(b"k4", "db", TABLES, b"")
    assert found is not None and found.answer is None and found.versions.split(b",")[0] != vers.split(b",")[0]


async def test_marks_are_published_and_expire_unless_renewed(level, redis_server) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not level.subscribed:  # a message published before the SUBSCRIBE is not delivered
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert await level.mark("db", frozenset({"t"}), "w6")
    while ("db", frozenset({"t"})) not in level.seen:
        assert asyncio.get_running_loop().time() < deadline, level.seen
        await asyncio.sleep(0.01)
    # renewed while the write runs (lease 2 s, renewed every 2/3 s)
    await asyncio.sleep(2.5)
    found = await level.lookup(b"k5", "db", TABLES, b"")
    assert found is not None and found.busy
    # a process that died: no renewal, the mark is gone within a lease
    level.live.clear()
    gone_by = asyncio.get_running_loop().time() + 2.4
    while True:
        found = await level.lookup(b"k5", "db", TABLES, b"")
        assert found is not None
        if not found.busy:
            break
        assert asyncio.get_running_loop().time() < gone_by, "the mark outlived its lease"
        await asyncio.sleep(0.05)  # polling Redis's own answer, with a deadline


async def test_after_redis_lost_its_data_nothing_is_stored_for_the_grace(level, redis_server) -> None:
    level.grace_ms = 60_000
    r = aioredis.from_url(redis_server.url)
    try:
        await r.delete(Keys(level.keys.prefix).epoch)  # as after a restart without persistence
    finally:
        await r.aclose()
    found = await level.lookup(b"k6", "db", TABLES, b"")
    assert found is not None and found.busy
    assert not await level.fill(b"k6", "db", TABLES, found.versions, encode_entry(found.versions, b"x"), 60_000)


async def test_redis_unreachable_is_not_an_error(redis_server) -> None:
    resets: list[int] = []
    lvl = SharedLevel("redis://127.0.0.1:9/0", prefix="test:down", timeout=0.5, lease=1.0,
                      on_invalidate=lambda db, t: None, on_reset=lambda: resets.append(1))  # fmt: skip
    try:
        assert await lvl.lookup(b"k", "db", TABLES, b"") is None
        assert not lvl.up and resets
        assert not await lvl.mark("db", TABLES, "w") and lvl.owed
        assert not await lvl.fill(b"k", "db", TABLES, b"1", b"1\nx", 1000)
        await lvl.release("db", TABLES, "w")
    finally:
        await lvl.close()


async def test_a_write_routed_while_redis_was_away_is_marked_when_it_returns(level) -> None:
    """Writes sent while the level was down: the one that ended is paid for by moving the epoch,
    the one still running is marked when Redis answers again and keeps fills off its tables
    until it ends."""
    vers = await _stored(level, b"k7", b"old")
    level.up = False  # as after a failed call (without the failure's own PING loop)
    assert not await level.mark("db", frozenset({"t"}), "running")
    assert not await level.mark("db", frozenset({"z"}), "ended")
    await level.release("db", frozenset({"z"}), "ended")
    assert level.owed and set(level.unmarked) == {"running"}
    assert await level.lookup(b"k7", "db", TABLES, b"") is None  # bypassed while down
    level._probe = asyncio.get_running_loop().create_task(level._probe_loop())
    await asyncio.wait_for(level._probe, 10)
    assert level.up and not level.owed and not level.unmarked
    found = await level.lookup(b"k7", "db", TABLES, b"")
    assert found is not None and found.answer is None and found.busy  # epoch moved; "t" marked
    assert found.versions.split(b",")[0] != vers.split(b",")[0]
    assert not await level.fill(b"k7", "db", TABLES, found.versions, encode_entry(found.versions, b"x"), 60_000)
    await level.release("db", frozenset({"t"}), "running")
    found = await level.lookup(b"k7", "db", TABLES, b"")
    assert found is not None and not found.busy
    assert await level.fill(b"k7", "db", TABLES, found.versions, encode_entry(found.versions, b"new"), 60_000)
