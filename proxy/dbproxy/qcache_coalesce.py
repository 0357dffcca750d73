"""Request coalescing for the query cache (issue 20): concurrent misses of one key, one server query.

When a cacheable statement misses, the session that missed first *leads*: its statement runs on
the primary and its answer fills the entry (qcache_session.py). Another session that misses the
same key while that runs *joins*: it sends nothing, pauses its input, and waits for the leader's
outcome (`Inflight`, one per process, keyed like the store):

- the answer was stored: the joiner answers with it (with its own ParseComplete for a batch with a
  Parse, and its own ReadyForQuery), unless a table it reads was invalidated since it joined (a
  write or purge after its request began: it runs its own query then);
- anything else (an error, a notice, an answer too large, a write that ended meanwhile, the
  leader's client or server gone): the joiner runs its statement itself, as a fill (and leads the
  key if no one else does by then). So a joiner never sees an answer the cache would not have
  served, and never an error that was another client's.

A joiner waits at most `COALESCE_WAIT` seconds for the leader (then runs its own query): a leader
stuck behind a lock does not hold every joiner for longer than that.

`Inflight` is pure bookkeeping (futures by key and owner); the waiting is `wait_for_leader`'s.
Counted: `coalesced` (joiners answered by a leader's fill).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["COALESCE_WAIT", "Inflight", "wait_for_leader"]

COALESCE_WAIT = 30.0  # seconds a joiner waits for the leader's answer


class Inflight:
    """Keys being filled: key -> (the leader's pending fill, the joiners' futures)."""

    def __init__(self) -> None:
        self.fills: dict[bytes, tuple[object, list[asyncio.Future[bytes | None]]]] = {}

    def lead(self, key: bytes, owner: object) -> bool:
        """Make `owner` the key's leader; False if it already has one."""
        if key in self.fills:
            return False
        self.fills[key] = (owner, [])
        return True

    def join(self, key: bytes) -> asyncio.Future[bytes | None] | None:
        """A future for the key's leader's outcome, or None when no one is filling it."""
        entry = self.fills.get(key)
        if entry is None:
            return None
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        entry[1].append(fut)
        return fut

    def settle(self, key: bytes, owner: object, answer: bytes | None) -> None:
        """The leader `owner` is done: `answer` if it was stored, else None. Not its leader: no-op."""
        entry = self.fills.get(key)
        if entry is None or entry[0] is not owner:
            return
        del self.fills[key]
        for fut in entry[1]:
            if not fut.done():
                fut.set_result(answer)


async def wait_for_leader(fut: asyncio.Future[bytes | None], timeout: float = COALESCE_WAIT) -> bytes | None:
    """The leader's stored answer, or None (not stored, or not within `timeout`)."""
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        return None


def to_primary(batch: list[tuple[Any, Any]], indexes: list[int], decision: Any) -> None:
    """Give the batch's messages at `indexes` the fill's `decision` (a simple Query's aux is
    ("query", d); a Parse's or Bind's ("parse"|"use", name, raw, d))."""
    for i in indexes:
        msg, aux = batch[i]
        batch[i] = (msg, ("query", decision) if aux[0] == "query" else aux[:3] + (decision,) + aux[4:])
