"""The query cache's shared level in the session: reads checked in Redis, writes marked there first.

Used by qcache_session.py when `[cache] redis` is set (`QueryCache.shared`, qcache_bus.py); the
protocol and why it gives read-your-writes across processes and instances are in qcache_redis.py.

- `shared_write(session, batch, tables)`: a batch that may write tables the session has not
  marked yet in its current write is held (the client paused) until Redis has the marks, then
  routed as usual. Marks are per session and per write: everything written from the first write
  until the primary connection is idle outside a transaction (committed or rolled back) shares one
  token, so a transaction's later statements to marked tables cost no round trip.
- `shared_release(session)`: that moment; the marks are released in the background (the next
  read of those tables by anyone sees either the mark, and does not store, or the new versions).
- `shared_read(session, batch, p, prefix, fill)`: a cacheable read (simple or extended) asks
  Redis (one script call) whether the in-process copy or Redis's entry is current; a hit is
  answered by the proxy, a miss with no write marked goes to the primary (joining a running fill
  of the same key, qcache_coalesce.py) and its answer is offered to Redis (`shared_fill`); the
  in-process level keeps a copy, and joiners get the answer, once Redis has stored it (so a
  joiner is never handed an answer that a write acknowledged before its request could predate).
- Redis unavailable (qcache_bus.SharedLevel.up false, or the call fails): reads run on the
  primary without the cache, writes are routed as usual (the level owes an epoch bump), no
  error reaches the client. Every hinted read that is not a hit runs on the primary (a replica
  may not have replayed a write acknowledged through another instance).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.pgwire.framing import Message

from .qcache_coalesce import to_primary
from .qcache_redis import Lookup, decode_entry, encode_entry
from .qcache_store import expires_at
from .router import PRIMARY

if TYPE_CHECKING:
    from .qcache_session import CachingSession, QueryCache, _Pending

__all__ = ["WriteMarks", "shared_end", "shared_fill", "shared_read", "shared_release", "shared_write"]

_READY = b"Z\x00\x00\x00\x05"


@dataclass(slots=True)
class WriteMarks:
    """The tables a session's current write has marked in Redis (`every`: the epoch)."""

    token: str = field(default_factory=lambda: secrets.token_hex(8))
    tables: set[str] = field(default_factory=set)
    every: bool = False

    def missing(self, tables: frozenset[str] | None) -> frozenset[str] | None:
        """What is still to be marked for a write of `tables` (None: every table); empty: nothing."""
        if self.every:
            return frozenset()
        if tables is None:
            return None
        return tables - self.tables

    def add(self, tables: frozenset[str] | None) -> None:
        if tables is None:
            self.every = True
        else:
            self.tables |= tables


def _run_then(session: CachingSession, coro: Coroutine[Any, Any, Any], then: Callable[[Any], None]) -> None:
    """Pause the client while `coro` runs, then call `then(result)`; it may route the batch (and
    start the session's own async path), so the client resumes only if nothing waits any more."""
    session.waiting = True
    if session.transport is not None:
        session.transport.pause_reading()
    task = session.d.qcache.shared.spawn_task(coro)

    def done(t: Any) -> None:
        session.waiting = False
        if session.phase == "closed" or t.cancelled():
            return
        try:
            then(t.result())
        except Exception:
            session._internal_error()
            return
        if not session.waiting and session.phase != "closed":
            if session.transport is not None and not session.server_paused:
                session.transport.resume_reading()
            session._pump()

    task.add_done_callback(done)


def _route(session: CachingSession, batch: list[tuple[Message, Any]]) -> None:
    from .session import ClientSession

    session.batch, session.batch_bytes = batch, 0
    ClientSession._dispatch(session)


def shared_write(session: CachingSession, batch: list[tuple[Message, Any]], tables: frozenset[str] | None) -> bool:
    """True if the batch waits for its marks (it is routed when they are in Redis)."""
    shared = session.d.qcache.shared
    if session.qmarks is None:
        session.qmarks = WriteMarks()
    marks = session.qmarks
    need = marks.missing(tables)
    if need is not None and not need:
        return False
    marks.add(need)  # a failed mark is owed by the level: the session need not try again
    if not shared.up:
        shared.note_unmarked(session.database, need, marks.token)
        return False
    _run_then(session, shared.mark(session.database, need, marks.token), lambda _ok: _route(session, batch))
    return True


def shared_release(session: CachingSession) -> None:
    marks, session.qmarks = session.qmarks, None
    if marks is None:
        return
    shared = session.d.qcache.shared
    if marks.every:
        shared.spawn(shared.release(session.database, None, marks.token))
    elif marks.tables:
        shared.spawn(shared.release(session.database, frozenset(marks.tables), marks.token))


def shared_end(session: CachingSession) -> None:
    """The client left: a write of its may still be running on the server (it is cancelled, and
    may commit first). Its marks stay for one lease, then are released."""
    marks = session.qmarks
    if marks is None:
        return
    shared = session.d.qcache.shared
    shared.live.pop(marks.token, None)  # no renewal: the lease runs out

    def later() -> None:
        session.qmarks = marks
        shared_release(session)

    session.d.qcache.shared.call_later(shared.lease_ms / 1000, later)


def shared_read(session: CachingSession, batch: list[tuple[Message, Any]], p: _Pending, prefix: bytes,
                fill: list[int], *, inject: Any = None) -> bool:  # fmt: skip
    """A cacheable read `p` (key, tables, ttl): True if it is taken (looked up in Redis, then
    answered or routed); False: route it now (Redis away: on the primary, not cached). `prefix`
    goes before a hit (ParseComplete of an extended batch), `fill` are the batch's messages that
    run on the primary for a fill. `inject`: the server of the open Sync group of an asyncpg-style
    batch (qcache_session._extended): a hit goes before that group's ReadyForQuery."""
    from .qcache_session import _FILL

    cache = session.d.qcache
    shared = cache.shared
    if not shared.up:
        cache.bypassed += 1
        to_primary(batch, fill, _FILL)  # as any miss (see _looked_up)
        return False
    held = cache.store.peek(p.key, time.monotonic())
    held_versions = held[: held.index(b"\n")] if held is not None else b""
    _run_then(session, shared.lookup(p.key, session.database, p.tables, held_versions),
              lambda found: _looked_up(session, batch, p, prefix, fill, inject, held, found))  # fmt: skip
    return True


def _looked_up(session: CachingSession, batch: list[tuple[Message, Any]], p: _Pending, prefix: bytes,
               fill: list[int], inject: Any, held: bytes | None, found: Lookup | None) -> None:  # fmt: skip
    from .qcache_session import _FILL, _miss

    cache: QueryCache = session.d.qcache
    # Whatever happens, the read runs on the primary, as every miss does: a replica may not have
    # replayed a write another instance has acknowledged.
    to_primary(batch, fill, _FILL)
    if found is None:
        cache.bypassed += 1
        _route(session, batch)
        return
    now = time.monotonic()
    answer = decode_entry(held, found.versions) if held is not None else None
    if answer is not None:
        cache.store.get(p.key, now)  # counts the hit, and for LRU/LFU it is a use
    else:
        answer = found.answer
        if answer is None:
            cache.store.misses += 1
        else:  # a hit from Redis: counted with the in-process ones, and apart (redis_hits)
            cache.store.hits += 1
            cache.l2_hits += 1
            cache.store.put(p.key, encode_entry(found.versions, answer), p.tables,
                            now + max(found.ttl_ms, 1) / 1000, now)  # fmt: skip
    cache.table_counters.count(p.tables, answer is not None)  # SHOW CACHE (qcache_ops.py)
    if inject is not None:
        if answer is not None:
            session.qinject = (inject, prefix + answer)
            batch[:] = batch[-1:]  # only the Sync goes to the server
        elif not found.busy and inject.backend == PRIMARY:
            p.shared_versions = found.versions
            session.qpending = p
        _route(session, batch)
        return
    if answer is not None:
        session.transport.write(prefix + answer + _READY + session._status())
        return
    if found.busy:  # a write to its tables is running: not stored, not coalesced
        _route(session, batch)
        return
    p.shared_versions = found.versions
    if not _miss(session, cache, batch, p, prefix, fill):
        _route(session, batch)


def shared_fill(session: CachingSession, cache: QueryCache, p: _Pending, answer: bytes | None) -> None:
    """A miss's answer (None: not to be stored) is in: offer it to Redis; keep a copy in-process
    once Redis has stored it, and only then hand it to the sessions that joined (coalescing)."""
    if session.qpending is p:
        session.qpending = None
    shared = cache.shared
    versions = p.shared_versions
    if answer is None or versions is None or cache.snapshot(p.tables) != p.versions:
        if answer is not None:
            cache.not_stored += 1  # a write to its tables, seen here, ended while it ran
        cache.inflight.settle(p.key, p, None)
        return
    ttl_ms = int(1000 * (expires_at(0.0, p.ttl, cache.cfg.jitter, cache.rng.random())))
    entry = encode_entry(versions, answer)
    db = session.database

    async def fill() -> None:
        stored = await shared.fill(p.key, db, p.tables, versions, entry, ttl_ms)
        if stored:
            cache.stored += 1
            now = time.monotonic()
            cache.store.put(p.key, entry, p.tables, now + ttl_ms / 1000, now)
        else:
            cache.not_stored += 1
        cache.inflight.settle(p.key, p, answer if stored else None)

    task = shared.spawn_task(fill())
    # Cancelled (the level closing): the joiners run their own statements.
    task.add_done_callback(lambda t: cache.inflight.settle(p.key, p, None) if t.cancelled() else None)
