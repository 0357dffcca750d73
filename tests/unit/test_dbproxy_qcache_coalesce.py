"""The query cache's coalescing bookkeeping (qcache_coalesce.py): one leader per key, joiners told
its outcome, a joiner's wait bounded."""

from __future__ import annotations

import asyncio

from proxy.dbproxy.qcache_coalesce import Inflight, to_primary, wait_for_leader


async def test_one_leader_per_key_and_joiners_told():
    inflight = Inflight()
    leader, other = object(), object()
    assert inflight.join(b"k") is None  # no one filling: the first miss leads
    assert inflight.lead(b"k", leader) and not inflight.lead(b"k", other)
    a, b = inflight.join(b"k"), inflight.join(b"k")
    inflight.settle(b"k", other, b"wrong")  # not the leader: ignored
    assert not a.done()
    inflight.settle(b"k", leader, b"answer")
    assert await a == b"answer" and await b == b"answer"
    assert inflight.join(b"k") is None and inflight.lead(b"k", other)
    c = inflight.join(b"k")
    inflight.settle(b"k", other, None)  # not stored: joiners run their own
    assert await c is None


async def test_a_joiner_waits_a_bounded_time():
    fut = asyncio.get_running_loop().create_future()
    assert await wait_for_leader(fut, timeout=0.01) is None


def test_to_primary():
    fill = object()
    batch = [("Q", ("query", "d")), ("P", ("parse", "s", b"raw", "d")), ("B", ("use", "s", b"raw", "d"))]
    to_primary(batch, [0, 2], fill)
    assert batch == [("Q", ("query", fill)), ("P", ("parse", "s", b"raw", "d")), ("B", ("use", "s", b"raw", fill))]
