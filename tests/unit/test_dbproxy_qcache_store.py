"""The query cache's in-process store (issue 20): byte bound, LRU/LFU/FIFO eviction, TTL and jitter,
per-table invalidation. Scenarios with hand-worked answers, then hypothesis against a naive model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.qcache_store import ENTRY_OVERHEAD, POLICIES, QueryCacheStore, expires_at

T0 = 1000.0
FAR = T0 + 3600


def k(i: int) -> bytes:
    return b"k%d" % i


def sized(n_entries: int, value_len: int = 10) -> int:
    """Room for exactly n_entries entries of key k<digit> and value_len bytes."""
    return (len(k(0)) + value_len + ENTRY_OVERHEAD) * n_entries


def fill(store: QueryCacheStore, keys: range) -> None:
    for i in keys:
        assert store.put(k(i), b"v" * 10, [], FAR, T0)


def test_lru_evicts_least_recently_used():
    store = QueryCacheStore(sized(3), "lru")
    fill(store, range(3))
    assert store.get(k(0), T0) == b"v" * 10  # 0 is now the most recent: 1 is next to go
    store.put(k(3), b"v" * 10, [], FAR, T0)
    assert k(1) not in store and {k(0), k(2), k(3)} == {x for x in map(k, range(4)) if x in store}
    store.get(k(2), T0)
    store.put(k(4), b"v" * 10, [], FAR, T0)  # order now 0, 3, 2 -> 0 goes
    assert k(0) not in store and k(2) in store and k(3) in store
    assert store.evictions == 2


def test_fifo_ignores_hits():
    store = QueryCacheStore(sized(3), "fifo")
    fill(store, range(3))
    for _ in range(5):
        store.get(k(0), T0)
    store.put(k(3), b"v" * 10, [], FAR, T0)
    assert k(0) not in store  # stored first, goes first, however hot
    store.put(k(4), b"v" * 10, [], FAR, T0)
    assert k(1) not in store and all(k(i) in store for i in (2, 3, 4))


def test_lfu_evicts_fewest_hits_oldest_first_among_equals():
    store = QueryCacheStore(sized(3), "lfu")
    fill(store, range(3))
    store.get(k(0), T0)
    store.get(k(0), T0)
    store.get(k(1), T0)
    store.put(k(3), b"v" * 10, [], FAR, T0)  # hits: 0->2, 1->1, 2->0
    assert k(2) not in store
    store.put(k(4), b"v" * 10, [], FAR, T0)  # 3 and ... 3 has 0 hits, it goes
    assert k(3) not in store
    store.get(k(4), T0)  # 4 reaches 1 hit after 1 did: 1 is the older of the two at 1 hit
    store.put(k(5), b"v" * 10, [], FAR, T0)  # no entry has 0 hits: 1 (1 hit, reached first) goes
    assert k(1) not in store and k(4) in store and k(5) in store
    store.put(k(6), b"v" * 10, [], FAR, T0)  # 5 (0 hits) goes before any entry with hits
    assert k(5) not in store and all(k(i) in store for i in (0, 4, 6)) and len(store) == 3


def test_restore_is_a_new_entry():
    store = QueryCacheStore(sized(2), "lfu")
    fill(store, range(2))
    store.get(k(0), T0)
    store.put(k(0), b"w" * 10, [], FAR, T0)  # replaced: zero hits again, newest
    store.get(k(1), T0)
    store.put(k(2), b"v" * 10, [], FAR, T0)
    assert k(0) not in store and store.get(k(1), T0) == b"v" * 10


def test_byte_accounting_and_too_large():
    store = QueryCacheStore(1000, "lru")
    assert store.put(b"a", b"x" * 100, ["t"], FAR, T0)
    assert store.bytes == 1 + 100 + ENTRY_OVERHEAD
    assert not store.put(b"b", b"x" * 1000, ["t"], FAR, T0)  # larger than the bound: refused
    assert b"a" in store and store.bytes == 301
    store.put(b"a", b"x" * 10, ["t"], FAR, T0)
    assert store.bytes == 211 and len(store) == 1


def test_expiry_and_jitter():
    store = QueryCacheStore(10_000, "lru")
    store.put(b"a", b"1", ["t"], T0 + 30, T0)
    assert store.get(b"a", T0 + 29.9) == b"1"
    assert store.get(b"a", T0 + 30) is None and b"a" not in store
    assert store.expirations == 1 and store.misses == 1 and store.hits == 1
    assert expires_at(100.0, 30.0, 0.2, 0.0) == 130.0
    assert expires_at(100.0, 30.0, 0.2, 0.5) == pytest.approx(127.0)
    assert expires_at(100.0, 30.0, 0.0, 0.9) == 130.0
    with pytest.raises(ValueError):
        expires_at(100.0, 30.0, 1.5, 0.5)
    assert not store.put(b"b", b"1", [], T0, T0)  # already expired: not stored


def test_expired_entries_go_before_live_ones():
    store = QueryCacheStore(sized(3), "lru")
    store.put(k(0), b"v" * 10, [], FAR, T0)
    store.put(k(1), b"v" * 10, [], T0 + 1, T0)
    store.put(k(2), b"v" * 10, [], FAR, T0)
    store.get(k(1), T0)  # most recently used, but it will have expired
    store.put(k(3), b"v" * 10, [], FAR, T0 + 2)
    assert k(1) not in store and k(0) in store and store.evictions == 0


def test_invalidate_by_table():
    store = QueryCacheStore(100_000, "lru")
    store.put(b"a", b"1", ["t", "u"], FAR, T0)
    store.put(b"b", b"2", ["u"], FAR, T0)
    store.put(b"c", b"3", [], FAR, T0)
    assert store.tables() == {"t": 1, "u": 2}
    assert store.invalidate_tables(["t"]) == 1
    assert b"a" not in store and b"b" in store and store.tables() == {"u": 1}
    assert store.invalidate_tables(["u", "nothing"]) == 1
    assert store.invalidations == {"t": 1, "u": 1}
    assert len(store) == 1 and store.tables() == {}
    assert store.clear() == 1 and store.bytes == 0


def test_bad_config():
    with pytest.raises(ValueError):
        QueryCacheStore(10, "random")
    with pytest.raises(ValueError):
        QueryCacheStore(-1, "lru")


# -- against a naive model ---------------------------------------------------------------------


class Model:
    """Lists and linear scans: obviously the policy, and nothing shared with the store's code."""

    def __init__(self, max_bytes: int, policy: str) -> None:
        self.max_bytes, self.policy = max_bytes, policy
        self.entries: list[list] = []  # [key, value, size, expires, hits, stamp]
        self.clock = 0

    def _find(self, key):
        return next((e for e in self.entries if e[0] == key), None)

    def get(self, key, now):
        e = self._find(key)
        if e is None:
            return None
        if e[3] <= now:
            self.entries.remove(e)
            return None
        e[4] += 1
        if self.policy != "fifo":
            self.clock += 1
            e[5] = self.clock
        return e[1]

    def put(self, key, value, expires, now):
        e = self._find(key)
        if e is not None:
            self.entries.remove(e)
        size = len(key) + len(value) + ENTRY_OVERHEAD
        if size > self.max_bytes or expires <= now:
            return
        used = sum(x[2] for x in self.entries)
        if used + size > self.max_bytes:
            self.entries = [x for x in self.entries if x[3] > now]
        while sum(x[2] for x in self.entries) + size > self.max_bytes:
            if self.policy == "lfu":
                victim = min(self.entries, key=lambda x: (x[4], x[5]))
            elif self.policy == "lru":
                victim = min(self.entries, key=lambda x: x[5])
            else:
                victim = self.entries[0]
            self.entries.remove(victim)
        self.clock += 1
        self.entries.append([key, value, size, expires, 0, self.clock])

    def invalidate(self, key_tables, table):
        self.entries = [x for x in self.entries if table not in key_tables.get(x[0], ())]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 7), st.integers(0, 300), st.integers(1, 20)),
        st.tuples(st.just("get"), st.integers(0, 7), st.just(0), st.just(0)),
        st.tuples(st.just("inv"), st.integers(0, 2), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.just(0), st.integers(1, 5)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(policy=st.sampled_from(POLICIES), max_bytes=st.integers(0, 1500), ops=OPS)
def test_store_matches_model_and_stays_bounded(policy, max_bytes, ops):
    store, model = QueryCacheStore(max_bytes, policy), Model(max_bytes, policy)
    now = T0
    key_tables: dict[bytes, tuple[str, ...]] = {}
    for op, i, n, t in ops:
        key = k(i)
        if op == "put":
            tables = ("t%d" % (i % 3),)
            value = bytes([i]) * n
            store.put(key, value, tables, now + t, now)
            model.put(key, value, now + t, now)
            key_tables[key] = tables
        elif op == "get":
            assert store.get(key, now) == model.get(key, now)
        elif op == "inv":
            store.invalidate_tables(["t%d" % i])
            model.invalidate(key_tables, "t%d" % i)
        else:
            now += t
        assert store.bytes <= max_bytes
        assert store.bytes == sum(e[2] for e in model.entries)
        assert {key for key in map(k, range(8)) if key in store} == {e[0] for e in model.entries}


def test_table_sizes():
    from proxy.dbproxy.qcache_store import ENTRY_OVERHEAD, QueryCacheStore

    store = QueryCacheStore(10_000)
    store.put(b"k1", b"x" * 10, ["a", "b"], 100.0, 0.0)
    store.put(b"k2", b"y" * 20, ["a"], 100.0, 0.0)
    one, two = 2 + 10 + ENTRY_OVERHEAD, 2 + 20 + ENTRY_OVERHEAD
    assert store.table_sizes() == {"a": (2, one + two), "b": (1, one)}
    store.invalidate_tables(["b"])
    assert store.table_sizes() == {"a": (1, two)}
