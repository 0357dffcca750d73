"""The cdn's byte-bounded store (proxy/cdn/store.py): the bound holds, and each policy evicts
the object its definition says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.store import OBJECT_OVERHEAD, POLICIES, Entry, Store


def entry(size: int) -> Entry:
    return Entry(status=200, headers=[], body=b"x" * size, request_time=0, response_time=0, lifetime=60)


def key(i: int) -> tuple[bytes, tuple]:
    return (f"/o/{i}".encode(), ())


COST = 1000 + OBJECT_OVERHEAD


def test_lru_evicts_least_recently_used():
    s = Store(3 * COST, "lru")
    for i in range(3):
        s.put(key(i), entry(1000))
    assert s.get(key(0)) is not None
    assert s.put(key(3), entry(1000)) == [key(1)]
    assert s.evictions == 1 and len(s) == 3 and s.bytes == 3 * COST


def test_fifo_ignores_uses():
    s = Store(3 * COST, "fifo")
    for i in range(3):
        s.put(key(i), entry(1000))
    s.get(key(0))
    assert s.put(key(3), entry(1000)) == [key(0)]


def test_lfu_evicts_least_frequently_used_oldest_first_on_ties():
    s = Store(3 * COST, "lfu")
    for i in range(3):
        s.put(key(i), entry(1000))
    for _ in range(3):
        s.get(key(0))
    s.get(key(2))
    assert s.put(key(3), entry(1000)) == [key(1)]
    assert s.put(key(4), entry(1000)) == [key(3)]  # new object (1 use) before key 2 (2 uses)


def test_too_large_objects_are_refused_and_evict_nothing():
    s = Store(10 * COST, "lru", max_object_bytes=2 * COST)
    s.put(key(0), entry(1000))
    assert s.put(key(1), entry(5000)) == [] and key(1) not in s and key(0) in s


def test_vary_variants_and_purge():
    s = Store(10 * COST)
    s.put((b"/a", (("accept", b"x"),)), entry(10))
    s.put((b"/a", (("accept", b"y"),)), entry(10))
    s.put((b"/b", ()), entry(10))
    assert len(s.variants(b"/a")) == 2
    assert s.purge(b"/a", soft=True) == 2 and all(s.peek((b"/a", v)).stale for v in s.variants(b"/a"))
    assert s.purge(b"/a") == 2 and len(s) == 1 and s.variants(b"/a") == []


def test_unknown_policy():
    with pytest.raises(ValueError):
        Store(100, "random")


@given(st.sampled_from(POLICIES),
       st.lists(st.tuples(st.sampled_from(["put", "get", "remove"]), st.integers(0, 30), st.integers(0, 3000)),
                max_size=200))
def test_bound_and_accounting_hold(policy, ops):
    bound = 5 * COST
    s = Store(bound, policy)
    for op, k, size in ops:
        if op == "put":
            s.put(key(k), entry(size))
        elif op == "get":
            s.get(key(k))
        else:
            s.remove(key(k))
        assert s.bytes <= bound
        assert s.bytes == sum(s.peek(key(i)).size for i in range(31) if key(i) in s)
        assert s.bytes == sum(len(s.peek(key(i)).body) + OBJECT_OVERHEAD for i in range(31) if key(i) in s)
