"""The query cache's shared level in Redis: entries, per-table versions, write marks (issue 20).

Every dbproxy process and instance that names the same `[cache] redis` sees one cache. The
in-process store (qcache_store.py) stays in front of it, but only as a copy of answer bytes:
an answer is served, from either level, only after one Redis round trip (a Lua script) has
confirmed that the versions it was stored under are still current. So correctness never
depends on a pub/sub message arriving (qcache_bus.py only frees memory early).

Keys (prefix P, default "tierproxy:qc"; `t` a table as the policy folds it, bare, as the in-process
level and the admin purge name tables: a write to `t` in one database also moves `t`'s version in
every other, which costs hits, never correctness):
- `P:epoch`: the version of "every table"; created with a random value, so after Redis loses its
  data (a restart without persistence) no versions string repeats an earlier one; `P:epoch:born`
  the time it was created (nothing is stored for a grace period after it).
- `P:v:<t>`: the table's version, an integer that only grows.
- `P:pend` and `P:p:<t>`: write marks in flight: sorted sets of tokens scored by
  a deadline (ms, Redis's own clock), renewed while the write runs, removed when it ends.
- `P:e:<hex of the key>`: an entry: `versions "\\n" answer`, with a PX expiry (the jittered TTL).
- channel `P:inv`: `{"db": ..., "tables": [...] | null}` published with every mark and release.

A versions string is the epoch and the versions of the statement's tables (sorted), joined by
commas. The protocol (docs/dbproxy.md states the guarantee it gives):
- write: before a write statement is sent to the primary, `MARK` increments the version of each
  table it may change (or the epoch) and adds a mark; when the write has ended (committed or
  rolled back), `RELEASE` removes the mark and increments the versions again.
- read: `LOOKUP` returns the current versions string, whether a mark is live on any of the tables
  ("busy"), and the entry if its versions string is the current one.
- fill: after a miss that was not busy, the answer is stored by `FILL` only if the versions are
  still the ones the lookup saw and no mark is live.
A read that started after a write's mark cannot be stored until the mark is gone (so after the
write ended), and anything stored before the mark carries older versions: once a write has been
acknowledged, no entry holding the value from before it is current any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FILL",
    "LOOKUP",
    "MARK",
    "RELEASE",
    "RENEW",
    "Keys",
    "Lookup",
    "decode_entry",
    "decode_message",
    "encode_entry",
    "encode_message",
]

# Lua, the start of every script: `now`, in ms on Redis's own clock (deadlines and the epoch's
# birth are all on it, whichever process runs the script).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Lua: KEYS = entry, epoch, global marks, n version keys, n mark keys; ARGV = n, epoch seed,
# grace ms, ... A missing epoch is created (Redis lost its data, or never had it) with the time
# of its creation beside it; for `grace` ms after that every table counts as marked: a write
# routed while Redis was away, by a process that has not reached it again yet, is paid for by
# that process (qcache_bus.py) within the grace.
_STATE = _NOW + """
local n = tonumber(ARGV[1])
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[2] .. ':born', now)
  epoch = ARGV[2]
end
local born = tonumber(redis.call('GET', KEYS[2] .. ':born') or '0')
local parts = {epoch}
for i = 1, n do parts[#parts + 1] = redis.call('GET', KEYS[3 + i]) or '0' end
local vers = table.concat(parts, ',')
local busy = 0
if now - born < tonumber(ARGV[3]) then busy = 1 end
if busy == 0 and redis.call('ZCOUNT', KEYS[3], now, '+inf') > 0 then busy = 1 end
for i = 1, n do
  if busy == 0 and redis.call('ZCOUNT', KEYS[3 + n + i], now, '+inf') > 0 then busy = 1 end
end
"""

# ARGV[4]: the versions string the caller's in-process copy holds ("" for none). Returns
# {versions, busy, entry or false, its PTTL}; the entry only if current and not already held.
LOOKUP = (
    _STATE
    + """
if ARGV[4] ~= vers then
  local v = redis.call('GET', KEYS[1])
  if v and string.sub(v, 1, #vers + 1) == vers .. '\\n' then
    return {vers, busy, v, redis.call('PTTL', KEYS[1])}
  end
end
return {vers, busy, false, 0}
"""
)

# ARGV[4]: the versions string seen by the lookup, ARGV[5]: the entry, ARGV[6]: TTL in ms.
FILL = (
    _STATE
    + """
if vers ~= ARGV[4] or busy == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
return 1
"""
)

# MARK's and RELEASE's start. KEYS = n version keys, n mark keys; ARGV = n, token, lease ms,
# channel, message, epoch seed, '1' when the keys are the epoch's (a missing epoch is seeded
# before it grows).
_WRITE = _NOW + """
local n = tonumber(ARGV[1])
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[6])
  redis.call('SET', KEYS[1] .. ':born', now)
end
"""

# A write's mark: its tables' versions grow, the mark's deadline is a lease from now.
MARK = _WRITE + """
local lease = tonumber(ARGV[3])
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now - 1)
  redis.call('ZADD', KEYS[n + i], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[n + i], 2 * lease)
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# Same KEYS and ARGV as MARK: the mark goes, the versions grow once more.
RELEASE = _WRITE + """
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('ZREM', KEYS[n + i], ARGV[2])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS = mark keys; ARGV = token, lease ms: a running write's marks get a new deadline.
RENEW = _NOW + """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[2]))
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names under one prefix."""

    prefix: str = "tierproxy:qc"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def all_marks(self) -> str:
        return f"{self.prefix}:pend"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:inv"

    def entry(self, key: bytes) -> str:
        return f"{self.prefix}:e:{key.hex()}"

    def version(self, table: str) -> str:
        return f"{self.prefix}:v:{table}"

    def marks(self, table: str) -> str:
        return f"{self.prefix}:p:{table}"

    def read_keys(self, key: bytes, tables: Iterable[str]) -> list[str]:
        """KEYS of LOOKUP and FILL, tables in the order of the versions string (sorted)."""
        ordered = sorted(tables)
        return ([self.entry(key), self.epoch, self.all_marks] + [self.version(t) for t in ordered]
                + [self.marks(t) for t in ordered])  # fmt: skip

    def write_keys(self, tables: frozenset[str] | None) -> list[str]:
        """KEYS of MARK and RELEASE: the tables' versions then marks; None means every table."""
        if tables is None:
            return [self.epoch, self.all_marks]
        ordered = sorted(tables)
        return [self.version(t) for t in ordered] + [self.marks(t) for t in ordered]


@dataclass(frozen=True, slots=True)
class Lookup:
    """LOOKUP's answer: the current versions string, whether a write mark is live on one of the
    tables, and the answer bytes if Redis holds a current entry (with its remaining TTL)."""

    versions: bytes
    busy: bool
    answer: bytes | None
    ttl_ms: int

    @classmethod
    def from_reply(cls, reply: list[object]) -> Lookup:
        vers, busy, entry, pttl = reply
        assert isinstance(vers, bytes)
        answer = decode_entry(entry, vers) if isinstance(entry, bytes) else None
        return cls(vers, busy == 1, answer, int(pttl) if isinstance(pttl, int) else 0)


def encode_entry(versions: bytes, answer: bytes) -> bytes:
    return versions + b"\n" + answer


def decode_entry(entry: bytes, versions: bytes) -> bytes | None:
    """The answer of `entry` if it was stored under `versions`, else None."""
    n = len(versions)
    if len(entry) > n and entry[n] == 0x0A and entry.startswith(versions):
        return entry[n + 1 :]
    return None


def encode_message(db: str, tables: frozenset[str] | None) -> str:
    return json.dumps({"db": db, "tables": None if tables is None else sorted(tables)})


def decode_message(data: bytes | str) -> tuple[str, frozenset[str] | None] | None:
    """(database, tables or None for all) of a channel message; None if it is not one of ours."""
    try:
        msg = json.loads(data)
        db, tables = msg["db"], msg["tables"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(db, str):
        return None
    if tables is None:
        return db, None
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        return None
    return db, frozenset(tables)
