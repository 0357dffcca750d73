"""The query cache in the dbproxy session: hits answered by the proxy, misses filled, writes invalidating.

`QueryCache` (one per daemon process, built only when `[cache] enabled`) holds the store
(qcache_store.py) and a version number per table; the session calls three hooks, and none of them
runs when the cache is off:

- `on_batch(session, batch)` before a batch is routed. Every write in it (any statement the
  classifier sends to the primary except transaction control, primary-state reads and locks)
  drops the entries of its tables (qcache_policy.written_tables; unknown tables drop everything)
  and marks them dirty in the session. A batch that is one simple Query with a valid
  `/* tierproxy:cache ttl=N */` hint or matching a `[[cache.rules]]` entry (qcache_rules.py) and a
  cacheable statement (qcache_policy.cacheable), outside
  any transaction, with no other statement in flight on any of the session's servers, is looked up
  (and so is one extended-protocol execution, qcache_extended.py, `_extended`): a hit is answered
  here (the stored RowDescription..CommandComplete bytes, then ReadyForQuery with the session's
  status) and never reaches a server; a miss is sent to the *primary* (a replica may lag
  behind a write this process has already invalidated for) and its answer captured.
- `on_relay(session, conn, data)` after the session forwarded a server's bytes: the captured
  answer is stored when its ReadyForQuery arrives, if it is exactly RowDescription, DataRows and
  CommandComplete, fits `max_entry_bytes`, and no table it reads was invalidated since the query
  was sent (a write that committed meanwhile may or may not be in the answer). The dirty tables
  are invalidated again when the primary has nothing in flight and no transaction is open: the
  write is then committed (or rolled back), and a read that ran before the commit cannot be
  stored after it.
- `on_lost(session)`: a server connection lost with writes in flight: their tables are
  invalidated (they may have committed).

With `[cache] redis` set, the shared level (qcache_shared.py, qcache_bus.py, qcache_redis.py)
takes over the lookups, fills and write marks, and `workers > 1` and several instances share one
cache; without it, one process only (the config refuses `enabled` with workers > 1).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.pgwire.framing import Message

from .classify import classify
from .classify_types import Decision, Reason, Target
from .qcache_bus import SharedLevel
from .qcache_coalesce import Inflight, to_primary, wait_for_leader
from .qcache_extended import extended_answer, extended_lookup, prepared_on_primary, ready_offset
from .qcache_ops import TableCounters
from .qcache_policy import cache_key, cacheable, key_context, normalise, written_tables
from .qcache_rules import CachePlanner
from .qcache_shared import WriteMarks, shared_end, shared_fill, shared_read, shared_release, shared_write
from .qcache_store import QueryCacheStore, expires_at
from .router import PRIMARY
from .session import ClientSession

if TYPE_CHECKING:
    from .config import CacheConfig

__all__ = ["CachingSession", "QueryCache", "answer_complete", "on_batch", "on_lost", "on_relay"]

_INT32 = struct.Struct("!i")
# A cache fill needs the primary's state; PRIMARY_STATE is a read to the router (no write noted).
_FILL = Decision(Target.PRIMARY, Reason.PRIMARY_STATE, detail="primary-state")
_NO_WRITE = frozenset({Reason.TRANSACTION_CONTROL, Reason.PRIMARY_STATE, Reason.LOCKING, Reason.EMPTY})


def answer_complete(buf: bytes | bytearray) -> tuple[bool, bytes | None]:
    """(done, answer): done once a ReadyForQuery ends `buf`; answer is the bytes before it when
    they are exactly RowDescription, DataRow*, CommandComplete, else None (not to be stored)."""
    pos, n = 0, len(buf)
    kinds: list[int] = []
    while n - pos >= 5:
        length = _INT32.unpack_from(buf, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > n:
            return False, None
        if buf[pos] == 0x5A:  # ReadyForQuery
            if end != n:
                return True, None
            ok = len(kinds) >= 2 and kinds[0] == 0x54 and kinds[-1] == 0x43
            ok = ok and all(k == 0x44 for k in kinds[1:-1]) and buf[end - 1] != 0x45  # not 'E'
            return True, bytes(buf[:pos]) if ok else None
        kinds.append(buf[pos])
        pos = end
    return False, None


@dataclass(slots=True)
class _Pending:
    key: bytes
    tables: frozenset[str]
    ttl: int
    versions: tuple[int, tuple[int, ...]]
    buf: bytearray = field(default_factory=bytearray)
    conn: Any = None
    check: Callable[[bytearray], tuple[bool, bytes | None]] = answer_complete  # extended_answer for a Bind
    shared_versions: bytes | None = None  # the Redis versions string its lookup saw (qcache_shared.py)


class QueryCache:
    """The process's cache: store, per-table versions, counters (see the module docstring)."""

    def __init__(self, cfg: CacheConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.store = QueryCacheStore(cfg.max_bytes, cfg.policy)
        self.rng = rng or random.Random()
        self.epoch = 0  # bumped when everything is dropped
        self.versions: dict[str, int] = {}
        self.stored = self.not_stored = 0
        self.planner = CachePlanner([rule.rule() for rule in cfg.rules])  # hint, then [[cache.rules]]
        self.table_counters = TableCounters()  # qcache_ops.py: hits and misses per table
        self.purges = self.cleared = 0  # POST /cache/purge requests; entries dropped by "all"
        self.inflight = Inflight()  # qcache_coalesce.py: keys being filled, and who waits for them
        self.coalesced = 0
        self.l2_hits = self.bypassed = 0  # hits from Redis; reads run without it (Redis away)
        self.shared: SharedLevel | None = None
        self.notifications = self.listen_connects = self.listening = 0  # qcache_notify.py ([cache.listen])

    def start(self) -> None:
        """In a process that serves clients: connect the shared level, if configured."""
        if self.cfg.redis is not None and self.shared is None:
            self.shared = SharedLevel(self.cfg.redis, prefix=self.cfg.redis_prefix, timeout=self.cfg.redis_timeout,
                                      lease=self.cfg.write_lease, on_invalidate=self._remote,
                                      on_reset=self.store.clear, rng=self.rng)  # fmt: skip
            self.shared.start()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    def _remote(self, _db: str, tables: frozenset[str] | None) -> None:
        # A mark published by any process (this one too): its in-process copies are dead.
        if tables is None:
            self.store.clear()
        else:
            self.store.invalidate_tables(tables)

    def invalidate_external(self, tables: frozenset[str] | None) -> None:
        """A change no session routed (a notification): dropped here and, with the shared level,
        in Redis, so every process and instance drops it."""
        self.invalidate(tables)
        if self.shared is not None:
            self.shared.spawn(self.shared.purge(tables))

    def invalidate(self, tables: frozenset[str] | None) -> None:
        if tables is None:
            self.epoch += 1
            self.cleared += self.store.clear()
            return
        for table in tables:
            self.versions[table] = self.versions.get(table, 0) + 1
        self.store.invalidate_tables(tables)

    def snapshot(self, tables: frozenset[str]) -> tuple[int, tuple[int, ...]]:
        return self.epoch, tuple(self.versions.get(t, 0) for t in sorted(tables))

    def fill(self, p: _Pending, answer: bytes) -> bool:
        """Store a fill's answer; False if it may not be (a write ended while it ran, too big)."""
        now = time.monotonic()
        if self.snapshot(p.tables) != p.versions:
            self.not_stored += 1  # a write to its tables ended while it ran
            return False
        expires = expires_at(now, p.ttl, self.cfg.jitter, self.rng.random())
        if self.store.put(p.key, answer, p.tables, expires, now):
            self.stored += 1
            return True
        return False


def _sql(raw: bytes) -> str | None:
    """The SQL text of a whole Query or Parse message, else None."""
    if raw[:1] == b"Q":
        return raw[5:-1].decode("utf-8", "surrogateescape")
    if raw[:1] == b"P":
        start = raw.index(b"\0", 5) + 1
        return raw[start : raw.index(b"\0", start)].decode("utf-8", "surrogateescape")
    return None


def _write_tables(raw: bytes, d: Decision) -> frozenset[str] | None:
    sql = _sql(raw)
    if sql is None:
        return None  # FunctionCall: anything
    if d.reason is Reason.HINT:
        # A routing hint hides the statement's own decision: classify it without comments.
        text = normalise(sql)
        if text is None:
            return None
        d = classify(text.decode("utf-8", "surrogateescape"))
    return written_tables(sql, d)


def _writes(batch: list[tuple[Message, Any]]) -> tuple[bool, frozenset[str] | None]:
    """(any write, its tables: None = unknown). A Bind or Describe of a prepared statement counts
    as its Parse (a prepared INSERT executed again is a write again)."""
    wrote, tables = False, set()
    for msg, aux in batch:
        if msg.type == b"F":
            return True, None  # FunctionCall: it can call anything
        if aux is None:
            continue
        kind = aux[0]
        if kind == "query":
            d, raw = aux[1], msg.raw
        elif kind in ("use", "parse", "dup"):
            d, raw = aux[3], aux[2]
        else:
            continue
        if d.target is not Target.PRIMARY or d.reason in _NO_WRITE:
            continue
        if d.reason is Reason.SESSION and d.detail != "execute-prepared":
            continue  # SET, LISTEN, temp objects (cached reads never come from a pinned session)
        found = _write_tables(raw, d) if d.detail != "execute-prepared" else None
        wrote = True
        if found is None:
            return True, None
        tables |= found
    return wrote, frozenset(tables)


def on_batch(session: ClientSession, batch: list[tuple[Message, Any]]) -> bool:
    """Invalidate for the batch's writes; True if the batch was answered from the cache."""
    cache: QueryCache = session.d.qcache
    wrote, tables = _writes(batch)
    if wrote:
        cache.invalidate(tables)
        if tables is None or session.qdirty is None:
            session.qdirty = None
        else:
            session.qdirty |= tables
        session.qwrote = True
        return cache.shared is not None and shared_write(session, batch, tables)
    if session.qpending is not None:
        return False
    if len(batch) != 1:
        return _extended(session, cache, batch)
    msg, aux = batch[0]
    if msg.type != b"Q" or aux is None or aux[0] != "query":
        return False
    sql = _sql(msg.raw)
    if sql is None or aux[1].reason is not Reason.READ:
        return False
    ttl, shape = cache.planner.plan(sql)  # qcache_rules.py: the hint, then the config's rules
    if ttl is None:
        return False
    router = session.router
    if router.in_transaction:
        # Not even a read-only one: a hit would answer rows (and status T) where the server
        # would answer 25P02 in a failed transaction, or a snapshot other than the transaction's
        # own under REPEATABLE READ; and a fill would run on the transaction's replica.
        return False
    if not cacheable(aux[1], shape, in_transaction=False, read_only_transaction=False,
                     pinned=router.pinned):  # fmt: skip
        return False
    if any(conn.busy for conn in session.servers.values()):
        return False  # an answer still due must come first
    text = cache.planner.normalise(sql)
    if text is None or shape is None:
        return False
    key = cache_key(text, context=_context(session))
    p = _Pending(key, shape.tables, ttl, cache.snapshot(shape.tables))
    if cache.shared is not None:
        return shared_read(session, batch, p, b"", [0])
    if _serve(session, cache, key, shape.tables, b""):
        return True
    return _miss(session, cache, batch, p, b"", [0])


def _miss(session: ClientSession, cache: QueryCache, batch: list[tuple[Message, Any]], p: _Pending,
          prefix: bytes, fill: list[int]) -> bool:  # fmt: skip
    """A miss: join the key's leader (True: the batch is taken care of), or lead and run it on
    the primary (False: the session sends the batch)."""
    fut = cache.inflight.join(p.key)
    if fut is not None:
        session._start_async(_join(session, cache, fut, batch, p, prefix, fill))
        return True
    cache.inflight.lead(p.key, p)
    session.qpending = p
    to_primary(batch, fill, _FILL)  # a replica may lag behind a write already invalidated
    return False


async def _join(session: ClientSession, cache: QueryCache, fut: Any, batch: list[tuple[Message, Any]],
                p: _Pending, prefix: bytes, fill: list[int]) -> None:  # fmt: skip
    """qcache_coalesce.py: the leader's stored answer, or this session's own fill."""
    answer = await wait_for_leader(fut)
    if session.phase == "closed":
        return
    if answer is not None and cache.snapshot(p.tables) == p.versions:
        cache.coalesced += 1
        session.forward_raw(prefix + answer + b"Z\x00\x00\x00\x05" + session._status())
        return
    p.versions = cache.snapshot(p.tables)
    cache.inflight.lead(p.key, p)
    session.qpending = p
    to_primary(batch, fill, _FILL)
    await session._route_async(batch, _FILL, None)


def _settle(session: ClientSession, cache: QueryCache, p: _Pending, answer: bytes | None) -> None:
    """The session's fill `p` is over: stored (`answer`) or not (None); joiners are told."""
    if session.qpending is p:
        session.qpending = None
    cache.inflight.settle(p.key, p, answer)


def _context(session: ClientSession) -> bytes:
    """The session's part of every key, encoded once (qcache_policy.key_context)."""
    ctx = session.qcontext
    if ctx is None:
        ctx = session.qcontext = key_context(database=session.database, user=session.user,
                                             settings=dict(session.options))  # fmt: skip
    return ctx


def _lookup(cache: QueryCache, key: bytes, tables: frozenset[str]) -> bytes | None:
    answer = cache.store.get(key, time.monotonic())
    cache.table_counters.count(tables, answer is not None)
    return answer


def _serve(session: ClientSession, cache: QueryCache, key: bytes, tables: frozenset[str], prefix: bytes) -> bool:
    """Answer from the cache if `key` is there: `prefix` (ParseComplete for a batch with a
    Parse), the stored bytes, ReadyForQuery."""
    answer = _lookup(cache, key, tables)
    if answer is None:
        return False
    session.transport.write(prefix + answer + b"Z\x00\x00\x00\x05" + session._status())
    return True


def _extended(session: ClientSession, cache: QueryCache, batch: list[tuple[Message, Any]]) -> bool:
    """[Parse] Bind [Describe] Execute Sync of a cacheable statement (qcache_extended.py)."""
    router = session.router
    if batch[-1][0].type != b"S":
        if batch[-1][0].type == b"H":
            for i in prepared_on_primary(batch, planner=cache.planner, in_transaction=router.in_transaction,
                                         pinned=router.pinned):  # fmt: skip
                msg, aux = batch[i]
                batch[i] = (msg, aux[:3] + (_FILL,) + aux[4:])
        return False
    found = extended_lookup(batch, planner=cache.planner, in_transaction=router.in_transaction,
                            pinned=router.pinned, context=_context(session))  # fmt: skip
    if found is None:
        return False
    look, _shape = found
    busy = [conn for conn in session.servers.values() if conn.busy]
    if busy:
        # asyncpg prepares with Parse/Describe/Flush and executes with Bind/Execute/Sync: one
        # Sync group on the server, still open. A hit sends that server only the Sync and puts
        # the stored answer before its ReadyForQuery (CachingSession.relay_from_server), after
        # the answers to the group's earlier messages; a miss runs there and is not stored.
        conn = busy[0]
        if len(busy) > 1 or conn is not session.current or conn.groups or conn.open_group is None or conn.copy:
            return False
        if cache.shared is not None:
            return shared_read(session, batch, _Pending(look.key, look.tables, look.ttl, cache.snapshot(look.tables),
                                                        conn=conn, check=extended_answer), look.prefix, [],
                               inject=conn)  # fmt: skip
        answer = _lookup(cache, look.key, look.tables)
        if answer is not None:
            session.qinject = (conn, look.prefix + answer)
            batch[:] = batch[-1:]
        elif conn.backend == PRIMARY:  # prepared there (prepared_on_primary): stored if all is well
            session.qpending = _Pending(look.key, look.tables, look.ttl, cache.snapshot(look.tables),
                                        conn=conn, check=extended_answer)  # fmt: skip
        return False
    p = _Pending(look.key, look.tables, look.ttl, cache.snapshot(look.tables), check=extended_answer)
    if cache.shared is not None:
        return shared_read(session, batch, p, look.prefix, look.fill)
    if _serve(session, cache, look.key, look.tables, look.prefix):
        return True
    return _miss(session, cache, batch, p, look.prefix, look.fill)


def on_relay(session: ClientSession, conn: Any, data: bytes) -> None:
    """After `data` (whole messages, forwarded) from `conn`: capture, store, invalidate."""
    cache: QueryCache = session.d.qcache
    p = session.qpending
    if p is not None:
        if p.conn is None:
            p.conn = conn
        if p.conn is conn and conn.backend != PRIMARY:
            _settle(session, cache, p, None)  # a replica's answer may predate a write already invalidated
        elif p.conn is conn:
            p.buf += data
            if conn._skip or len(p.buf) > cache.cfg.max_entry_bytes + 6:
                _settle(session, cache, p, None)  # too large (or forwarded unframed): not stored
            else:
                done, answer = p.check(p.buf)
                if done and cache.shared is not None:
                    shared_fill(session, cache, p, answer)  # settled when Redis has answered
                elif done:
                    stored = answer is not None and cache.fill(p, answer)
                    _settle(session, cache, p, answer if stored else None)
    if session.qwrote and conn.backend == PRIMARY and not conn.busy and not session.router.in_transaction:
        cache.invalidate(session.qdirty)
        session.qdirty, session.qwrote = set(), False
        if cache.shared is not None:
            shared_release(session)


def on_lost(session: ClientSession) -> None:
    if session.qpending is not None:
        _settle(session, session.d.qcache, session.qpending, None)
    session.qinject = None
    if session.qwrote:
        session.d.qcache.invalidate(session.qdirty)
        session.qdirty, session.qwrote = set(), False
        if session.d.qcache.shared is not None:
            shared_release(session)


class CachingSession(ClientSession):
    """The session the daemon builds when `[cache] enabled`: the hooks above around routing and
    relaying (a daemon without a cache builds plain ClientSessions, which never look)."""

    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.qpending: _Pending | None = None
        self.qdirty: set[str] | None = set()  # tables written since the last invalidation; None: all
        self.qwrote = False
        self.qcontext: bytes | None = None  # qcache_policy.key_context, once per session
        self.qinject: tuple[Any, bytes] | None = None  # (server, stored answer) due before its ReadyForQuery
        self.qmarks: WriteMarks | None = None  # the current write's marks in Redis (qcache_shared.py)

    def _dispatch(self) -> None:
        if self.aborted is None and on_batch(self, self.batch):
            self.batch, self.batch_bytes = [], 0
            return
        super()._dispatch()

    def relay_from_server(self, conn: Any, data: bytes) -> int:
        inject = self.qinject
        if inject is not None and inject[0] is conn and not conn._skip:
            at = ready_offset(data)
            if at >= 0:
                used = super().relay_from_server(conn, data[:at]) if at else 0
                on_relay(self, conn, data[:used])
                self.qinject = None
                if not conn.errored:  # an error in the group: the server skipped the rest, as it would have
                    self.forward_raw(inject[1])
                rest = super().relay_from_server(conn, data[at:])
                on_relay(self, conn, data[at : at + rest])
                return used + rest
        used = super().relay_from_server(conn, data)
        on_relay(self, conn, data[:used])
        return used

    def on_server_lost(self, conn: Any) -> None:
        on_lost(self)
        super().on_server_lost(conn)

    def _fail_batch(self, batch: list[tuple[Message, Any]], exc: Any) -> None:
        p = self.qpending
        if p is not None and p.conn is None:
            # The fill never reached a server: its answer will not come, and the next relayed
            # answer (another statement's) must not be taken for it.
            _settle(self, self.d.qcache, p, None)
        super()._fail_batch(batch, exc)

    def _end(self) -> None:
        if self.qpending is not None:  # the client went away: its fill's joiners run their own
            _settle(self, self.d.qcache, self.qpending, None)
        if self.phase != "closed" and self.d.qcache.shared is not None:
            shared_end(self)
        super()._end()
