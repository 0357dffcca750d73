"""Key names and the Lua scripts that make each queue step atomic in Redis.

Per queue `q` (with the configured prefix, default `tq`):
    tq:{q}:stream    the ready/in-flight jobs (a stream, consumer group `workers`)
    tq:{q}:delayed   jobs not due yet, and retries waiting out their backoff (sorted set by due ms)
    tq:{q}:dead      the dead-letter stream
    tq:{q}:keys      the idempotency ledger: key -> "queued:<job id>" then "done:<job id>"
    tq:{q}:counts    counters: done, retries, dead, skipped (duplicates acked without a run)
    tq:queues        the set of queue names ever used (what `stats` lists)
    tq:limits        queue -> max_length, published by workers from their config
    tq:{q}:order:K   per-key ordering: the ids of order key K's unfinished jobs, in enqueue order
    tq:{q}:parked    job id -> job bytes: jobs delivered while their order key's head was unfinished
    tq:{q}:durations handler run time: count:C, sum:C (seconds) per consumer C (worker process),
                     added by the script that settles the run (the queue's totals are their sums)

Per-key ordering: a job enqueued with `order_key=K` appends its id to K's list. A worker runs it
only when it is the list's head (GATE); otherwise the job is parked (taken out of the stream, not
lost). Settling the head for good (FINISH, SKIP, DEAD; not RETRY: a retried job stays the head)
pops it and moves the new head, if parked, back into the stream, in the same script: no polling.

Why scripts: every state change a crash could cut in half (ack + ledger, ack + retry, ack + dead
letter, due delayed jobs -> stream) happens in one script, which Redis runs atomically and writes to
its append-only file as one unit. Entries are deleted from the stream when acknowledged, so the
stream's length is what is not finished yet.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "QueueKeys", "ENQUEUE", "FINISH", "RETRY", "DEAD", "PROMOTE", "HEARTBEAT", "SKIP", "GATE",
           "REPLAY", "RELEASE_LOST_HEADS"]

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
    def parked(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:parked"

    def order(self, order_key: str | None) -> str:
        """The list of order key's unfinished job ids ("" when the job has no order key)."""
        return f"{self.prefix}:{{{self.queue}}}:order:{order_key}" if order_key else ""

    @property
    def durations(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:durations"

    @property
    def all(self) -> list[str]:
        return [self.stream, self.delayed, self.dead, self.ledger, self.counts, self.parked, self.durations]


def registry_key(prefix: str) -> str:
    return f"{prefix}:queues"


def limits_key(prefix: str) -> str:
    return f"{prefix}:limits"


# KEYS: stream delayed ledger registry limits parked order; ARGV: job-bytes key due-ms now-ms max-length
# queue job-id order-key. max-length < 0: the limit the workers published (none if they did not).
# Parked jobs count towards the limit: they are unfinished work.
# -> {"ok", id} | {"dup", ledger value} | {"full", length, limit}
ENQUEUE = """
if ARGV[2] ~= '' then
  local seen = redis.call('HGET', KEYS[3], ARGV[2])
  if seen then return {'dup', seen} end
end
local limit = tonumber(ARGV[5])
if limit < 0 then limit = tonumber(redis.call('HGET', KEYS[5], ARGV[6]) or '0') end
if limit > 0 then
  local n = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('HLEN', KEYS[6])
  if n >= limit then return {'full', tostring(n), tostring(limit)} end
end
redis.call('SADD', KEYS[4], ARGV[6])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], 'queued:' .. ARGV[7]) end
if ARGV[8] ~= '' then redis.call('RPUSH', KEYS[7], ARGV[7]) end
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

# The job (id ARGV[J]) is settled for good: if it heads its order key's list (KEYS[O], "" for none),
# pop it, and put the new head back into the stream if it was parked waiting for its turn.
def _advance(o: int, p: int, j: int) -> str:
    return f"""
if KEYS[{o}] ~= '' and redis.call('LINDEX', KEYS[{o}], 0) == ARGV[{j}] then
  redis.call('LPOP', KEYS[{o}])
  local nxt = redis.call('LINDEX', KEYS[{o}], 0)
  if nxt then
    local parked = redis.call('HGET', KEYS[{p}], nxt)
    if parked then
      redis.call('XADD', KEYS[1], '*', 'job', parked)
      redis.call('HDEL', KEYS[{p}], nxt)
    end
  end
end
"""


# A handler run of ARGV[a] seconds ("": the handler did not run) by consumer ARGV[2], into the
# durations hash KEYS[k], per consumer (the queue's totals are their sums: two commands per job, not
# four, on the hot path), in the script that settles the run, so `tierproxy queue stats` shows what
# every worker's /metrics histogram shows, without a round trip of its own.
def _duration(k: int, a: int) -> str:
    return f"""
if ARGV[{a}] ~= '' then
  redis.call('HINCRBY', KEYS[{k}], 'count:' .. ARGV[2], 1)
  redis.call('HINCRBYFLOAT', KEYS[{k}], 'sum:' .. ARGV[2], ARGV[{a}])
end
"""


# KEYS: stream counts ledger order parked durations; ARGV: group consumer msg-id key job-id seconds
# -> 1 done, 0 not ours
FINISH = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], 'done:' .. ARGV[5]) end
""" + _duration(6, 6) + _advance(4, 5, 5) + """
return 1
"""

# A duplicate whose key is already done: acknowledged without running it.
# KEYS: stream counts order parked; ARGV: group consumer msg-id job-id
SKIP = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'skipped', 1)
""" + _advance(3, 4, 4) + """
return 1
"""

# Per-key ordering: may this delivery run now? Yes if it heads its order key's list (or the list
# lost it: an empty list, a job replayed without one); else it is parked until the head settles.
# KEYS: stream order parked; ARGV: group consumer msg-id job-id job-bytes -> 1 run, 0 parked, -1 not ours
GATE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if (not p[1]) or p[1][2] ~= ARGV[2] then return -1 end
local head = redis.call('LINDEX', KEYS[2], 0)
if (not head) or head == ARGV[4] then return 1 end
local pos = redis.call('LPOS', KEYS[2], ARGV[4])
if not pos then return 1 end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 0
"""

# An operator sends a dead job back (dlq replay): to the stream, and to the back of its order key's
# line, behind the jobs enqueued meanwhile. KEYS: stream dead order; ARGV: entry-id job-bytes job-id
REPLAY = """
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
if KEYS[3] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[3]) end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
return 1
"""

# KEYS: stream counts delayed durations; ARGV: group consumer msg-id job-bytes due-ms seconds
RETRY = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('HINCRBY', KEYS[2], 'retries', 1)
""" + _duration(4, 6) + """return 1
"""

# A dead job leaves its order key's line (its successors run; replay puts it at the back).
# KEYS: stream counts dead order parked durations; ARGV: group consumer msg-id job-bytes reason job-id
# seconds ("" when the handler did not run: undecodable, or its workers kept dying)
DEAD = _OWNED + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'job', ARGV[4], 'reason', ARGV[5], 'from', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'dead', 1)
""" + _duration(6, 7) + _advance(4, 5, 6) + """
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

# An operator releases an order key's line whose head was lost (`tierproxy queue order release`):
# the head's job is nowhere a live job can be (the stream, ready or running; the delayed set; the
# parked hash), so nothing will ever settle it and the key's later jobs stay parked. Pop lost heads
# until a live one heads the line, and put that one back into the stream if it is parked (a parked
# head waits for nobody, and no other script would move it). One
# script, so no job moves between the places looked at while it looks; it reads the whole stream
# and delayed set (an operator's command, not a hot path).
# KEYS: order stream delayed parked -> {released head ids..., "" , state of the new head}
RELEASE_LOST_HEADS = """
local function id_of(raw)
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' then return doc['id'] end
  return nil
end
local live = {}
local last = '-'
while true do
  local batch = redis.call('XRANGE', KEYS[2], last, '+', 'COUNT', 1000)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'job' then
        local id = id_of(f[i + 1])
        if id then live[id] = 'stream' end
      end
    end
    last = '(' .. e[1]
  end
end
for _, raw in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local id = id_of(raw)
  if id then live[id] = 'delayed' end
end
local released = {}
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then
    table.insert(released, '')
    table.insert(released, 'empty')
    return released
  end
  local parked = redis.call('HGET', KEYS[4], head)
  if parked then  -- it heads the line now, so it may run: nothing else would wake it
    redis.call('XADD', KEYS[2], '*', 'job', parked)
    redis.call('HDEL', KEYS[4], head)
    table.insert(released, '')
    table.insert(released, 'unparked')
    return released
  end
  if live[head] then
    table.insert(released, '')
    table.insert(released, live[head])
    return released
  end
  redis.call('LPOP', KEYS[1])
  table.insert(released, head)
end
"""
