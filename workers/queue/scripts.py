"""Key names and the Lua scripts that make each queue step atomic in Redis.

Per queue `q` (with the configured prefix, default `tq`):
    tq:{q}:stream    the ready/in-flight jobs (a stream, consumer group `workers`)
    tq:{q}:delayed   jobs not due yet, and retries waiting out their backoff (sorted set by due ms)
    tq:{q}:dead      the dead-letter stream
    tq:{q}:keys      the idempotency ledger: key -> "queued:<job id>" then "done:<job id>"
    tq:{q}:counts    counters: done, retries, dead, skipped (duplicates acked without a run)
    tq:queues        the set of queue names ever used (what `stats` lists)
    tq:limits        queue -> max_length, published by workers from their config

Why scripts: every state change a crash could cut in half (ack + ledger, ack + retry, ack + dead
letter, due delayed jobs -> stream) happens in one script, which Redis runs atomically and writes to
its append-only file as one unit. Entries are deleted from the stream when acknowledged, so the
stream's length is what is not finished yet.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "QueueKeys", "ENQUEUE", "FINISH", "RETRY", "DEAD", "PROMOTE", "HEARTBEAT", "SKIP"]

GROUP = "workers"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    prefix: str
    queue: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:stream"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:delayed"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:dead"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:keys"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:counts"

    @property
    def all(self) -> list[str]:
        return [self.stream, self.delayed, self.dead, self.ledger, self.counts]


def registry_key(prefix: str) -> str:
    return f"{prefix}:queues"


def limits_key(prefix: str) -> str:
    return f"{prefix}:limits"


# KEYS: stream delayed ledger registry limits; ARGV: job-bytes key due-ms now-ms max-length queue job-id
# max-length < 0: the limit the workers published (none if they did not).
# -> {"ok", id} | {"dup", ledger value} | {"full", length, limit}
ENQUEUE = """
if ARGV[2] ~= '' then
  local seen = redis.call('HGET', KEYS[3], ARGV[2])
  if seen then return {'dup', seen} end
end
local limit = tonumber(ARGV[5])
if limit < 0 then limit = tonumber(redis.call('HGET', KEYS[5], ARGV[6]) or '0') end
if limit > 0 then
  local n = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if n >= limit then return {'full', tostring(n), tostring(limit)} end
end
redis.call('SADD', KEYS[4], ARGV[6])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], 'queued:' .. ARGV[7]) end
if tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return {'ok', 'delayed'}
end
return {'ok', redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])}
"""

# The message is still ours: pending, delivered to this consumer. A worker that lost its claim (it
# stalled past the visibility timeout and another took the job) must not ack or retry it.
_OWNED = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if (not p[1]) or p[1][2] ~= ARGV[2] then return 0 end
"""

# KEYS: stream counts ledger; ARGV: group consumer msg-id key job-id -> 1 done, 0 not ours
FINISH = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], 'done:' .. ARGV[5]) end
return 1
"""

# A duplicate whose key is already done: acknowledged without running it.
# KEYS: stream counts; ARGV: group consumer msg-id
SKIP = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'skipped', 1)
return 1
"""

# KEYS: stream counts delayed; ARGV: group consumer msg-id job-bytes due-ms
RETRY = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('HINCRBY', KEYS[2], 'retries', 1)
return 1
"""

# KEYS: stream counts dead; ARGV: group consumer msg-id job-bytes reason
DEAD = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'job', ARGV[4], 'reason', ARGV[5], 'from', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'dead', 1)
return 1
"""

# Due delayed jobs into the stream, oldest first. KEYS: delayed stream; ARGV: now-ms limit -> moved
PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'job', job)
  redis.call('ZREM', KEYS[1], job)
end
return #due
"""

# Renew a running job's claim: XCLAIM ... JUSTID resets its idle time so XAUTOCLAIM (which takes
# entries idle longer than the visibility timeout) leaves it alone. Only if it is still ours: a
# plain XCLAIM would steal it back from a worker that legitimately reclaimed it.
# KEYS: stream; ARGV: group consumer msg-id -> 1 renewed, 0 lost
HEARTBEAT = _OWNED + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
