"""The store's eviction policies (proxy/cdn/policies.py) and W-TinyLFU's frequency sketch
(proxy/cdn/sketch.py): LRU, LFU and FIFO evict exactly what a naive reference model of their
definitions evicts; W-TinyLFU keeps its window and protected segments in their shares, admits a
candidate only when the sketch counts it more often used than probation's oldest object, resists
scans of one-hit objects, and the byte bound is never exceeded under any sequence of operations."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cdn.policies import POLICIES, WTinyLfuPolicy
from proxy.cdn.sketch import MAX_COUNT, FrequencySketch
from proxy.cdn.store import Entry, Store


def entry() -> Entry:
    return Entry(status=200, headers=[], body=b"", request_time=0, response_time=0, lifetime=60)


def key(i: int | str) -> tuple[bytes, tuple]:
    return (f"/o/{i}".encode(), ())


class Reference:
    """The textbook definitions, O(n) per step: victim = min over resident objects except the
    incoming one of (LRU) last use, (FIFO) insertion, (LFU) (uses while resident, last use)."""

    def __init__(self, policy: str, bound: int) -> None:
        self.policy, self.bound, self.clock = policy, bound, 0
        self.objs: dict = {}  # key -> [size, inserted, last_use, uses]

    def put(self, k, size: int) -> list:
        self.clock += 1
        if size > self.bound:
            return []
        self.objs.pop(k, None)
        self.objs[k] = [size, self.clock, self.clock, 1]
        evicted = []
        while sum(o[0] for o in self.objs.values()) > self.bound:
            others = {x: o for x, o in self.objs.items() if x != k}
            rank = {"lru": lambda o: o[2], "fifo": lambda o: o[1], "lfu": lambda o: (o[3], o[2])}[self.policy]
            victim = min(others, key=lambda x: rank(others[x]))
            del self.objs[victim]
            evicted.append(victim)
        return evicted

    def get(self, k) -> None:
        self.clock += 1
        if k in self.objs:
            self.objs[k][2] = self.clock
            self.objs[k][3] += 1


ops_strategy = st.lists(st.tuples(st.sampled_from(["put", "get", "get", "remove"]), st.integers(0, 25),
                                  st.integers(1, 3000)), max_size=150)


@given(st.sampled_from(["lru", "lfu", "fifo"]), ops_strategy)
def test_classic_policies_evict_what_their_definition_says(policy, ops):
    bound = 8000
    store, ref = Store(bound, policy), Reference(policy, bound)
    for op, k, size in ops:
        if op == "put":
            assert store.put(key(k), entry(), cost=size) == ref.put(key(k), size)
        elif op == "get":
            store.get(key(k))
            ref.get(key(k))
        else:
            store.remove(key(k))
            ref.objs.pop(key(k), None)
        assert sorted(store.keys()) == sorted(ref.objs)


@settings(max_examples=150)
@given(st.sampled_from(POLICIES), ops_strategy, st.integers(2000, 20000))
def test_bound_accounting_and_segments_hold_for_every_policy(policy, ops, bound):
    store = Store(bound, policy)
    for op, k, size in ops:
        if op == "put":
            evicted = store.put(key(k), entry(), cost=size)
            assert len(set(evicted)) == len(evicted)
            assert all(e not in store for e in evicted)
        elif op == "get":
            store.get(key(k))
        else:
            store.remove(key(k))
        assert store.bytes <= bound
        assert store.bytes == sum(e.size for _, e in store.entries())
        pol = store._policy
        if isinstance(pol, WTinyLfuPolicy):
            segs = pol.segment_bytes()
            assert sum(segs.values()) == store.bytes
            assert all(pol.where(k) is not None for k, _ in store.entries())
            assert segs["window"] <= pol.window_max
            assert segs["protected"] <= max(pol.protected_max, max((e.size for _, e in store.entries()), default=0))


# -- W-TinyLFU scenarios: 100 objects of 1000 bytes fit; the window holds one of them.

def tiny() -> Store:
    return Store(100_000, "wtinylfu")


def test_a_candidate_no_more_popular_than_probations_oldest_is_not_admitted():
    s = tiny()
    for i in range(100):
        s.put(key(i), entry(), cost=1000)
    assert len(s) == 100 and s._policy.where(key(99)) == "window"
    # key 99 leaves the window as the candidate; one use each, so it loses to key 0.
    assert s.put(key("new"), entry(), cost=1000) == [key(99)]
    assert s._policy.where(key("new")) == "window" and key(0) in s


def test_a_more_popular_candidate_is_admitted_and_probations_oldest_evicted():
    s = tiny()
    for i in range(100):
        s.put(key(i), entry(), cost=1000)
    s.put(key("hot"), entry(), cost=1000)  # evicts key 99 (above)
    for _ in range(3):
        s.get(key("hot"))
    assert s.put(key("next"), entry(), cost=1000) == [key(0)]
    assert s._policy.where(key("hot")) == "probation"
    s.get(key("hot"))
    assert s._policy.where(key("hot")) == "protected"


def test_scan_of_one_hit_objects_does_not_flush_popular_ones_unlike_lru():
    for policy, survivors in (("wtinylfu", 50), ("lru", 0)):
        s = Store(100_000, policy)
        for i in range(50):
            s.put(key(f"hot{i}"), entry(), cost=1000)
        for _ in range(4):
            for i in range(50):
                s.get(key(f"hot{i}"))
        for i in range(1000):
            s.put(key(f"scan{i}"), entry(), cost=1000)
        assert sum(key(f"hot{i}") in s for i in range(50)) == survivors, policy
        assert s.bytes <= 100_000


def test_protected_segment_keeps_its_share():
    s = tiny()
    for i in range(100):
        s.put(key(i), entry(), cost=1000)
    for i in range(99):  # all but the window's object are on probation; use each once
        s.get(key(i))
    segs = s._policy.segment_bytes()
    assert segs["protected"] <= s._policy.protected_max == 79_200
    assert segs["protected"] + segs["probation"] + segs["window"] == s.bytes == 100_000


def test_reload_to_a_smaller_bound_evicts_down_to_it():
    s = tiny()
    for i in range(100):
        s.put(key(i), entry(), cost=1000)
    evicted = s.resize(50_000, 10_000)
    assert len(evicted) == 50 and s.bytes == 50_000 and s._policy.window_max == 500


# -- the sketch

@given(st.lists(st.integers(0, 300), max_size=400))
def test_count_min_never_underestimates_before_aging(keys):
    sk = FrequencySketch(64, sample_size=10**9)
    for k in keys:
        sk.increment(key(k))
    for k, n in Counter(keys).items():
        assert sk.frequency(key(k)) >= min(n, MAX_COUNT)


def test_sketch_counters_saturate_and_age_by_halving():
    sk = FrequencySketch(1024, sample_size=10**9)
    for _ in range(40):
        sk.increment(key("a"))
    assert sk.frequency(key("a")) == MAX_COUNT
    sk.reset()
    assert sk.frequency(key("a")) == MAX_COUNT // 2
    # Aging is automatic after sample_size counted increments.
    sk2 = FrequencySketch(1024, sample_size=100)
    for i in range(10):
        sk2.increment(key("b"))
    for i in range(90):
        sk2.increment(key(f"other{i}"))
    assert sk2.resets == 1 and sk2.frequency(key("b")) == 5


def test_sketch_is_deterministic_across_instances():
    a, b = FrequencySketch(256), FrequencySketch(256)
    for i in range(500):
        a.increment(key(i % 37))
        b.increment(key(i % 37))
    assert [a.frequency(key(i)) for i in range(60)] == [b.frequency(key(i)) for i in range(60)]
