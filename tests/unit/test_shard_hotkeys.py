"""Space-Saving top-K: heavy hitters above N/K are always present, counts bound the truth; skew."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.shard.hotkeys import HotKeys, SpaceSaving

streams = st.lists(st.integers(min_value=0, max_value=60), max_size=600)


@settings(max_examples=200, deadline=None)
@given(streams, st.integers(min_value=1, max_value=20))
def test_heavy_hitters_are_always_present(stream: list[int], capacity: int) -> None:
    s = SpaceSaving(capacity)
    for key in stream:
        s.offer(key)
    truth = Counter(stream)
    assert s.total == len(stream) and len(s) <= capacity
    for key, n in truth.items():
        if n > len(stream) / capacity:
            assert key in s, (key, n)
    for key, c, err in s.top():
        assert c - err <= truth[key] <= c


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=300), st.integers(1, 12))
def test_weighted_offers_keep_the_bounds(stream: list[tuple[int, int]], capacity: int) -> None:
    s = SpaceSaving(capacity)
    truth: Counter[int] = Counter()
    for key, w in stream:
        s.offer(key, w)
        truth[key] += w
    total = sum(truth.values())
    for key, n in truth.items():
        if n > total / capacity:
            assert key in s
    for key, c, err in s.top():
        assert c - err <= truth[key] <= c


@settings(max_examples=100, deadline=None)
@given(st.lists(streams, min_size=1, max_size=4), st.integers(2, 15))
def test_merged_summaries_bound_the_combined_truth(parts: list[list[int]], capacity: int) -> None:
    summaries = []
    for part in parts:
        s = SpaceSaving(capacity)
        for key in part:
            s.offer(key)
        summaries.append(s)
    merged = SpaceSaving.merged(summaries, capacity)
    truth = Counter(k for part in parts for k in part)
    assert merged.total == sum(truth.values()) and len(merged) <= capacity
    for key, c, err in merged.top():
        assert c - err <= truth[key] <= c


def test_top_orders_by_count() -> None:
    s = SpaceSaving(3)
    for key in ["a"] * 5 + ["b"] * 3 + ["c"]:
        s.offer(key)
    assert s.top(2) == [("a", 5, 0), ("b", 3, 0)]
    s.offer("d")  # replaces c (count 1): d starts at 2 with error 1
    assert s.count("d") == (2, 1) and "c" not in s
    with pytest.raises(ValueError):
        s.offer("e", 0)


def test_a_long_stream_keeps_memory_bounded() -> None:
    s = SpaceSaving(50)
    for i in range(20_000):
        s.offer(i % 997)
        s.offer("celebrity")
    assert len(s) == 50 and len(s._heap) <= 4 * 50 + 1
    assert s.top(1)[0][0] == "celebrity"


def test_hot_keys_skew_and_metrics() -> None:
    hk = HotKeys(["s0", "s1", "s2", "s3"], capacity=10)
    for i in range(300):
        hk.record("users", 42, "s2")
        hk.record("users", 1000 + i, f"s{i % 4}")
    top = hk.top(1)[0]
    assert (top.group, top.key, top.shard, top.count) == ("users", 42, "s2", 300)
    assert top.share == 0.5
    sk = hk.skew()
    assert sk.busiest == "s2" and sk.shard_counts["s2"] == 375
    assert sk.max_to_mean == 375 / 150
    names = {(n, tuple(sorted(lbl.items()))) for n, lbl, _ in hk.metrics()}
    assert ("tierproxy_shard_skew_ratio", ()) in names
    assert ("tierproxy_shard_statements_total", (("shard", "s0"),)) in names
    assert ("tierproxy_shard_hottest_key_share", (("group", "users"),)) in names


def test_workers_summaries_travel_as_json_and_merge() -> None:
    """With workers = N each worker sends `to_json()` over the control channel (JSON lines); the
    merged view counts every worker's statements and keeps integer and text keys apart."""
    import json

    a, b = HotKeys(["s0", "s1"], capacity=10), HotKeys(["s0", "s1"], capacity=10)
    for _ in range(30):
        a.record("users", 7, "s1")
    for _ in range(20):
        b.record("users", 7, "s1")
        b.record("users", "7", "s0")
    b.record_shard("s0")
    parts = [json.loads(json.dumps(h.to_json())) for h in (a, b)]
    merged = HotKeys.merged(parts, ["s0", "s1"], 10)
    top = merged.top(2)
    assert [(h.key, h.shard, h.count, h.error) for h in top] == [(7, "s1", 50, 0), ("7", "s0", 20, 0)]
    assert merged.shard_counts == {"s0": 21, "s1": 50}
    assert merged.skew().busiest == "s1"
    assert HotKeys.merged([], ["s0", "s1"], 10).top() == []
