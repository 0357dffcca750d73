"""Balancers: exact sequences, load preferences, hashing stability, bounded loads, properties."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from math import ceil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.hashing import HashRing
from proxy.lb.balancer import (
    ALGORITHMS,
    ConsistentHash,
    LeastConn,
    RandomTwo,
    WeightedRoundRobin,
    make_balancer,
)


@dataclass(eq=False)
class Host:
    name: str
    weight: int = 1
    inflight: int = 0


def hosts(spec: dict[str, int]) -> tuple[Host, ...]:
    return tuple(Host(n, w) for n, w in spec.items())


def members_of(hs) -> list[tuple[str, int]]:
    return [(h.name, h.weight) for h in hs]


# -- registry ---------------------------------------------------------------------------------


def test_registry_names():
    assert set(ALGORITHMS) == {
        "round_robin",
        "weighted_round_robin",
        "least_conn",
        "random_two",
        "consistent_hash",
    }


def test_make_balancer_errors():
    with pytest.raises(ValueError, match="unknown load-balancing algorithm 'fastest'"):
        make_balancer("fastest", [("a", 1)])
    with pytest.raises(TypeError):
        make_balancer("round_robin", [("a", 1)], load_factr=2.0)
    with pytest.raises(ValueError):
        make_balancer("least_conn", [("a", 1), ("a", 2)])
    with pytest.raises(ValueError):
        make_balancer("least_conn", [("a", 0)])
    with pytest.raises(ValueError):
        make_balancer("consistent_hash", [("a", 1)], load_factor=0.9)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_empty_candidates_give_none(algorithm):
    b = make_balancer(algorithm, [("a", 1)])
    assert b.pick(()) is None
    assert b.pick((), key=b"k") is None


# -- round robin ------------------------------------------------------------------------------


def test_round_robin_rotates_and_ignores_weights():
    hs = hosts({"a": 5, "b": 1, "c": 1})
    b = make_balancer("round_robin", members_of(hs))
    assert [b.pick(hs).name for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    small = hs[:2]
    assert [b.pick(small).name for _ in range(4)] == ["b", "a", "b", "a"]


# -- smooth weighted round robin --------------------------------------------------------------


def test_wrr_exact_nginx_sequence():
    # From nginx's commit introducing smooth WRR (ngx_http_upstream_round_robin.c, 1.3.x):
    # "{ a, a, b, a, c, a, a }" for weights a=5, b=1, c=1.
    hs = hosts({"a": 5, "b": 1, "c": 1})
    b = make_balancer("weighted_round_robin", members_of(hs))
    seq = "".join(b.pick(hs).name for _ in range(21))
    assert seq == "aabacaa" * 3


def test_wrr_exact_proportions():
    hs = hosts({"a": 3, "b": 2, "c": 4, "d": 1})
    b = make_balancer("weighted_round_robin", members_of(hs))
    counts = Counter(b.pick(hs).name for _ in range(10 * 100))
    assert counts == {"a": 300, "b": 200, "c": 400, "d": 100}


def test_wrr_ties_go_to_first_in_order():
    hs = hosts({"x": 1, "y": 1, "z": 1})
    b = make_balancer("weighted_round_robin", members_of(hs))
    assert [b.pick(hs).name for _ in range(6)] == ["x", "y", "z", "x", "y", "z"]


def test_wrr_current_weights_persist_across_eligibility_changes():
    # Hand-computed: a=2, b=1. Pick 1 on (a, b): currents (2, 1) -> a, a = 2 - 3 = -1.
    # Pick 2 on (b,): b = 1 + 1 = 2 -> b, b = 2 - 1 = 1.
    # Pick 3 on (a, b): a = -1 + 2 = 1, b = 1 + 1 = 2 -> b, b = 2 - 3 = -1.
    # Pick 4 on (a, b): a = 1 + 2 = 3, b = -1 + 1 = 0 -> a.
    # Had state been reset on the change, pick 3 would have been a.
    a, bh = Host("a", 2), Host("b", 1)
    both, only_b = (a, bh), (bh,)
    b = WeightedRoundRobin(members_of(both))
    got = [b.pick(both).name, b.pick(only_b).name, b.pick(both).name, b.pick(both).name]
    assert got == ["a", "b", "b", "a"]
    assert b.current_weights() == {"a": 0, "b": 0}


def test_wrr_new_tuple_with_new_weights_is_honoured():
    b = make_balancer("weighted_round_robin", [("a", 1), ("b", 1)])
    first = hosts({"a": 1, "b": 1})
    assert Counter(b.pick(first).name for _ in range(10)) == {"a": 5, "b": 5}
    second = hosts({"a": 4, "b": 1})  # the caller rebuilt its tuple after a weight change
    assert Counter(b.pick(second).name for _ in range(50)) == {"a": 40, "b": 10}


def _smooth_wrr(state: dict, cands) -> object:
    """nginx's smooth weighted round robin written out, no shortcut: the model for WRR's picks."""
    best = None
    for h in cands:
        state[h.name] = state.get(h.name, 0) + h.weight
        if best is None or state[h.name] > state[best.name]:
            best = h
    state[best.name] -= sum(h.weight for h in cands)
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sets(st.sampled_from("abc"), min_size=1), st.sampled_from([1, 2, 3, 0.1, 0.3])),
                min_size=1, max_size=30))
def test_wrr_equals_the_model_with_one_candidate_and_float_weights(steps):
    # One candidate takes a shortcut (its current weight unchanged) only where the weights are
    # ints; a float's `c + w - w` may differ from `c`, which the model (and nginx's ints) keep.
    every = {n: Host(n, 1) for n in "abc"}
    b = WeightedRoundRobin([(n, 1) for n in "abc"])
    state: dict = {}
    for names, weight in steps:
        for n in names:
            every[n].weight = weight
        cands = tuple(every[n] for n in sorted(names))  # a new tuple: a rebind reads the weights
        assert b.pick(cands) is _smooth_wrr(state, cands)
        assert b.current_weights() == {n: v for n, v in state.items()}


# -- least connections ------------------------------------------------------------------------


def test_least_conn_picks_lowest_inflight_per_weight():
    hs = (Host("a", 2, 4), Host("b", 1, 3), Host("c", 1, 1))  # loads 2.0, 3.0, 1.0
    b = LeastConn(members_of(hs))
    assert all(b.pick(hs).name == "c" for _ in range(5))
    hs2 = (Host("a", 4, 3), Host("b", 1, 1))  # 0.75 beats 1.0
    assert all(b.pick(hs2).name == "a" for _ in range(5))


def test_least_conn_idle_equals_alternate():
    hs = hosts({"a": 1, "b": 1, "c": 1})
    b = LeastConn(members_of(hs))
    assert [b.pick(hs).name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_least_conn_under_sticky_load_follows_weights():
    # Requests that never finish: each pick raises its host's inflight. The balancer must keep
    # inflight/weight level, so after 60 picks loads are exactly proportional to weights.
    hs = hosts({"a": 1, "b": 2, "c": 3})
    b = LeastConn(members_of(hs))
    for _ in range(60):
        b.pick(hs).inflight += 1
    assert [h.inflight for h in hs] == [10, 20, 30]


# -- power of two choices ---------------------------------------------------------------------


def test_random_two_never_picks_the_single_overloaded_host():
    hs = (Host("a", 1, 100), Host("b", 1, 0), Host("c", 1, 0))
    b = RandomTwo(members_of(hs), rng=random.Random(7))
    counts = Counter(b.pick(hs).name for _ in range(2000))
    assert counts["a"] == 0
    assert 800 < counts["b"] < 1200


def test_random_two_with_two_candidates_always_takes_less_loaded():
    hs = (Host("a", 1, 5), Host("b", 1, 2))
    b = RandomTwo(members_of(hs), rng=random.Random(1))
    assert {b.pick(hs).name for _ in range(200)} == {"b"}


def test_random_two_samples_distinct_hosts_by_weight():
    # The least-loaded host "a" (weight 1 of 1+2+3) wins iff it is one of the two samples.
    # By hand: P = P(first=a) + P(first=b) P(second=a | b out) + P(first=c) P(second=a | c out)
    #            = 1/6 + 2/6 * 1/4 + 3/6 * 1/3 = 5/12 ~ 0.4167.
    hs = (Host("a", 1, 0), Host("b", 2, 50), Host("c", 3, 50))
    b = RandomTwo(members_of(hs), rng=random.Random(2024))
    n = 20_000
    wins = sum(b.pick(hs).name == "a" for _ in range(n))
    assert abs(wins / n - 5 / 12) < 0.015


def test_random_two_ties_follow_weights():
    hs = (Host("a", 1, 0), Host("b", 3, 0))
    b = RandomTwo(members_of(hs), rng=random.Random(3))
    counts = Counter(b.pick(hs).name for _ in range(8000))
    assert abs(counts["b"] / 8000 - 0.75) < 0.02


def test_random_two_single_candidate():
    hs = (Host("a", 1, 9),)
    assert RandomTwo(members_of(hs)).pick(hs) is hs[0]


# -- consistent hashing with bounded loads ----------------------------------------------------

KEYS = [f"10.0.{i // 256}.{i % 256}".encode() for i in range(10_000)]


def ring_hosts(n: int) -> tuple[Host, ...]:
    return tuple(Host(f"web{i}") for i in range(n))


def test_consistent_hash_same_key_same_member():
    hs = ring_hosts(5)
    b = ConsistentHash(members_of(hs))
    first = {k: b.pick(hs, k).name for k in KEYS[:1000]}
    again = ConsistentHash(members_of(hs))  # a fresh instance (another worker) agrees
    assert all(again.pick(hs, k).name == v for k, v in first.items())
    assert all(b.pick(hs, k).name == v for k, v in first.items())
    # and it is the ring's owner (HashRing is tested on its own)
    ring = HashRing(members_of(hs))
    assert all(ring.lookup(k) == v for k, v in first.items())


def test_consistent_hash_ineligible_member_moves_only_its_keys():
    hs = ring_hosts(5)
    b = ConsistentHash(members_of(hs))
    before = {k: b.pick(hs, k).name for k in KEYS}
    without = tuple(h for h in hs if h.name != "web3")
    after = {k: b.pick(without, k).name for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "web3"}
    assert all(after[k] != "web3" for k in KEYS)


@pytest.mark.parametrize("n", [4, 9])
def test_consistent_hash_adding_member_moves_about_one_over_n_plus_one(n):
    old_h, new_h = ring_hosts(n), ring_hosts(n + 1)
    old_b, new_b = ConsistentHash(members_of(old_h)), ConsistentHash(members_of(new_h))
    moved = sum(old_b.pick(old_h, k).name != new_b.pick(new_h, k).name for k in KEYS)
    assert 0.5 / (n + 1) < moved / len(KEYS) < 1.6 / (n + 1)


def test_consistent_hash_bounded_load_caps_a_hot_key():
    hs = ring_hosts(4)
    b = ConsistentHash(members_of(hs), load_factor=1.25)
    home = HashRing(members_of(hs)).walk(b"hot")
    order = list(home)
    total = 0
    for _ in range(200):
        # the paper's cap for the request being placed, computed here independently
        cap = ceil(1.25 * (total + 1) / 4)
        h = b.pick(hs, b"hot")
        h.inflight += 1
        total += 1
        assert h.inflight <= cap
    loads = {h.name: h.inflight for h in hs}
    assert max(loads.values()) <= ceil(1.25 * 200 / 4)  # 63
    # the key's home host is full, and the spill went to the next hosts on its walk
    assert loads[order[0]] >= ceil(1.25 * 199 / 4) - 1
    assert loads[order[0]] >= loads[order[1]] >= loads[order[-1]]


def test_consistent_hash_without_key_round_robins():
    hs = ring_hosts(3)
    b = ConsistentHash(members_of(hs))
    assert [b.pick(hs).name for _ in range(6)] == ["web0", "web1", "web2"] * 2


def test_consistent_hash_falls_back_to_first_eligible_on_walk():
    # "x" is not on the ring (not a configured member), so the only walk candidate is "a",
    # over the cap: ceil(1.25 * (10 + 0 + 1) / 2) = 7 and 10 >= 7, yet it is taken.
    a, x = Host("a", 1, 10), Host("x", 1, 0)
    b = ConsistentHash([("a", 1)])
    assert b.pick((a, x), b"k") is a
    # when no candidate is on the ring at all, round robin over the candidates
    y = Host("y")
    assert [b.pick((x, y), b"k").name for _ in range(2)] == ["x", "y"]


# -- properties -------------------------------------------------------------------------------

NAMES = [f"h{i}" for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(sorted(ALGORITHMS)),
    weights=st.lists(st.integers(1, 9), min_size=len(NAMES), max_size=len(NAMES)),
    steps=st.lists(
        st.tuples(
            st.sets(st.sampled_from(NAMES)),  # the eligible subset for this pick
            st.one_of(st.none(), st.binary(max_size=8)),  # key
            st.integers(0, 20),  # inflight to set on a host
        ),
        max_size=30,
    ),
    seed=st.integers(0, 2**16),
)
def test_pick_returns_member_of_candidates_or_none(algorithm, weights, steps, seed):
    all_hosts = [Host(n, w) for n, w in zip(NAMES, weights)]
    opts = {"rng": random.Random(seed)} if algorithm == "random_two" else {}
    b = make_balancer(algorithm, members_of(all_hosts), **opts)
    for eligible, key, load in steps:
        cands = tuple(h for h in all_hosts if h.name in eligible)
        for _ in range(3):  # the same tuple object several times, as the caller does
            got = b.pick(cands, key)
            if not cands:
                assert got is None
            else:
                assert any(got is c for c in cands)
                got.inflight = load
