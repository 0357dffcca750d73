"""The query cache's connection to Redis: the scripts of qcache_redis.py run, marks kept alive,
invalidations received, and what happens while Redis is away (issue 20).

`SharedLevel` (one per dbproxy process that serves clients, built when `[cache] redis` is set):
- `lookup`, `fill`, `mark`, `release` run the Lua scripts. Each fails soft: a Redis error, a
  timeout (`redis_timeout`) or a refused connection makes the level *down* and the call answers
  "not available" (None / False); the session then bypasses the cache (reads go to the database,
  writes go on), and no client ever sees a Redis error.
- While down, nothing is asked of Redis; a probe PINGs it every `PROBE_INTERVAL` seconds. When it
  answers, a write that could not be marked meanwhile (`owed`) is paid for first by a MARK and
  RELEASE of the epoch (every table), then the level is up again and the in-process copies are
  dropped (Redis may have lost or kept anything).
- Marks of writes still running are renewed every lease / 3 (`write_lease`), so a long write
  keeps tables uncacheable until it ends, and the marks of a process that died go within a lease.
- A subscriber on the channel drops in-process entries of the tables another process or instance
  marked (`on_invalidate`), and drops them all (`on_reset`) after it lost the connection: messages
  may have been missed. This only frees memory early; every hit is checked in Redis anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .qcache_redis import FILL, LOOKUP, MARK, RELEASE, RENEW, Keys, Lookup, decode_message, encode_message

__all__ = ["PROBE_INTERVAL", "SharedLevel"]

log = logging.getLogger("tierproxy.dbproxy")

PROBE_INTERVAL = 0.5  # seconds between PINGs while Redis is away
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class SharedLevel:
    """See the module docstring."""

    def __init__(self, url: str, *, prefix: str, timeout: float, lease: float,
                 on_invalidate: Callable[[str, frozenset[str] | None], None],
                 on_reset: Callable[[], None], rng: random.Random | None = None) -> None:  # fmt: skip
        self.url = url
        self.keys = Keys(prefix)
        self.timeout = timeout
        self.lease_ms = int(lease * 1000)
        # After Redis lost its data, nothing is stored until every process that routed a write
        # meanwhile has had time to notice that Redis is back and pay for it (qcache_redis.py).
        self.grace_ms = int(2000 * (PROBE_INTERVAL + timeout))
        self.on_invalidate = on_invalidate
        self.on_reset = on_reset
        self.rng = rng or random.Random()
        # No retries inside redis-py: one failure means "down", the cache is bypassed at once.
        self.redis = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                       retry=Retry(NoBackoff(), 0), health_check_interval=0)  # fmt: skip
        self._lookup = self.redis.register_script(LOOKUP)
        self._fill = self.redis.register_script(FILL)
        self._mark = self.redis.register_script(MARK)
        self._release = self.redis.register_script(RELEASE)
        self._renew = self.redis.register_script(RENEW)
        self.up = True
        self.owed = False  # a write was routed while its tables could not be marked
        # token -> (database, tables) of writes routed unmarked and not ended yet: marked as soon
        # as Redis answers again, so their end (release) is still what lets fills resume
        self.unmarked: dict[str, tuple[str, frozenset[str] | None]] = {}
        self.live: dict[str, list[str]] = {}  # token -> mark keys of writes still running
        self.tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._probe: asyncio.Task[None] | None = None
        self.subscribed = False  # the channel's messages reach this process now
        # Counters (SHOW CACHE, /metrics may read them).
        self.errors = 0
        self.outages = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._subscribe_loop()), loop.create_task(self._renew_loop())]

    async def close(self) -> None:
        for task in [*self._loops, *self.tasks, *([self._probe] if self._probe else [])]:
            task.cancel()
        for task in [*self._loops, *self.tasks]:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(*_FAILURES):
            await self.redis.aclose()

    def spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` as a task of the level's (cancelled by `close`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background (a fill, a release): nobody waits for it."""
        self.spawn_task(coro)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    # -- the scripts --------------------------------------------------------------------------------

    def _seed(self) -> str:
        return str(self.rng.randrange(1 << 62))

    async def lookup(self, key: bytes, db: str, tables: frozenset[str], held: bytes) -> Lookup | None:
        """The entry's state in Redis (qcache_redis.Lookup), or None: not available, bypass."""
        if not self.up:
            return None
        keys = self.keys.read_keys(key, tables)
        try:
            reply = await self._lookup(keys=keys, args=[len(tables), self._seed(), self.grace_ms, held])
        except _FAILURES as exc:
            self._down(exc)
            return None
        return Lookup.from_reply(reply)

    async def fill(self, key: bytes, db: str, tables: frozenset[str], versions: bytes, entry: bytes,
                   ttl_ms: int) -> bool:  # fmt: skip
        """Store `entry` if the versions are still `versions` and no write is marked."""
        if not self.up:
            return False
        keys = self.keys.read_keys(key, tables)
        try:
            stored = await self._fill(keys=keys, args=[len(tables), self._seed(), self.grace_ms, versions, entry,
                                                       max(1, ttl_ms)])  # fmt: skip
        except _FAILURES as exc:
            self._down(exc)
            return False
        return stored == 1

    def _write_args(self, db: str, tables: frozenset[str] | None, token: str) -> tuple[list[str], list[Any]]:
        keys = self.keys.write_keys(tables)
        n = len(keys) // 2
        args = [n, token, self.lease_ms, self.keys.channel, encode_message(db, tables), self._seed(),
                "1" if tables is None else "0"]  # fmt: skip
        return keys, args

    def note_unmarked(self, db: str, tables: frozenset[str] | None, token: str) -> None:
        """A write goes to the server without its mark (Redis away): owed, and marked on return."""
        self.owed = True
        if token in self.unmarked:
            _, before = self.unmarked[token]
            tables = None if before is None or tables is None else before | tables
        self.unmarked[token] = (db, tables)

    async def mark(self, db: str, tables: frozenset[str] | None, token: str) -> bool:
        """Mark a write about to be sent; False (and `owed`) if Redis did not take it."""
        if not self.up:
            self.note_unmarked(db, tables, token)
            return False
        keys, args = self._write_args(db, tables, token)
        try:
            await self._mark(keys=keys, args=args)
        except _FAILURES as exc:
            self.note_unmarked(db, tables, token)
            self._down(exc)
            return False
        self.live.setdefault(token, []).extend(keys[len(keys) // 2 :])
        return True

    async def release(self, db: str, tables: frozenset[str] | None, token: str) -> None:
        """The write of `token` has ended: its marks go, its tables' versions grow once more."""
        self.live.pop(token, None)
        self.unmarked.pop(token, None)  # ended while Redis was away: the owed epoch covers it
        if not self.up:
            return  # its marks expire within a lease
        keys, args = self._write_args(db, tables, token)
        try:
            await self._release(keys=keys, args=args)
        except _FAILURES as exc:
            self._down(exc)

    async def purge(self, tables: frozenset[str] | None) -> None:
        """An operator's purge (POST /cache/purge): every instance's entries of `tables` (None:
        all) stop being current, as after a write to them."""
        token = "purge-" + self._seed()
        if await self.mark("", tables, token):
            await self.release("", tables, token)

    # -- down and up again --------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.up:
            return
        self.up = False
        self.outages += 1
        log.warning("query cache: Redis unavailable, bypassing the cache", extra={"error": repr(exc)})
        self.on_reset()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await self.redis.ping()
                if self.owed:
                    # Writes whose tables are unknown to Redis: everything stored before is dropped.
                    keys, args = self._write_args("", None, "owed")
                    await self._mark(keys=keys, args=args)
                    await self._release(keys=keys, args=args)
                for token, (db, tables) in list(self.unmarked.items()):
                    # Still running: marked now, released when it ends (as if marked at its start).
                    keys, args = self._write_args(db, tables, token)
                    await self._mark(keys=keys, args=args)
                    if self.unmarked.pop(token, None) is not None:
                        self.live.setdefault(token, []).extend(keys[len(keys) // 2 :])
                    else:  # it ended meanwhile
                        await self._release(keys=keys, args=args)
            except _FAILURES:
                continue
            self.owed = False
            self.on_reset()
            self.up = True
            log.warning("query cache: Redis is back")
            return

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not self.up:
                continue
            for token, keys in list(self.live.items()):
                try:
                    await self._renew(keys=keys, args=[token, self.lease_ms])
                except _FAILURES as exc:
                    self._down(exc)
                    break

    async def _subscribe_loop(self) -> None:
        # Its own client: a subscribed connection waits without a socket timeout.
        client = aioredis.from_url(self.url, socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0))
        try:
            while True:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.keys.channel)
                    self.on_reset()  # what was missed while not subscribed
                    self.subscribed = True
                    while True:
                        msg = await pubsub.get_message(timeout=None)
                        if msg is not None and msg.get("type") == "message":
                            decoded = decode_message(msg["data"])
                            if decoded is not None:
                                self.on_invalidate(*decoded)
                except _FAILURES:
                    pass
                finally:
                    self.subscribed = False
                    with contextlib.suppress(*_FAILURES):
                        await pubsub.aclose()
                self.on_reset()
                await asyncio.sleep(PROBE_INTERVAL)
        finally:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()
