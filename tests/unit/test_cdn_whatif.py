"""`tierproxy cdn whatif` (proxy/cdn/whatif.py) and the trace format (proxy/cdn/trace.py).

The replay is checked against caching theory computed here, independently of the store: on a
stationary Zipf trace (the independent reference model) LRU's hit ratio is Che's approximation,
FIFO's the corresponding one for FIFO/RANDOM (Gelenbe), and frequency-based policies (LFU,
W-TinyLFU) come closer to the static optimum (the C most popular objects' probability mass); on a
working set that moves, LRU only pays each phase's cold misses while LFU keeps the old set."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.trace import HEADER, TraceError, TraceRecorder, encode, parse, read_trace
from proxy.cdn.whatif import parse_size, replay

REPO = Path(__file__).resolve().parents[2]
OBJECTS, ALPHA, CACHED, SIZE = 2000, 0.9, 200, 1000


def zipf_probabilities(n: int, alpha: float) -> list[float]:
    w = [1 / (i + 1) ** alpha for i in range(n)]
    s = sum(w)
    return [x / s for x in w]


def characteristic_time(occupancy, capacity: int) -> float:
    """The T with sum_i occupancy(p_i, T) = capacity (bisection; occupancy grows with T)."""
    lo, hi = 0.0, 1e12
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if occupancy(mid) < capacity else (lo, mid)
    return lo


def theory(p: list[float], c: int) -> dict[str, float]:
    t_lru = characteristic_time(lambda t: sum(1 - math.exp(-q * t) for q in p), c)
    t_fifo = characteristic_time(lambda t: sum(q * t / (1 + q * t) for q in p), c)
    return {"lru": sum(q * (1 - math.exp(-q * t_lru)) for q in p),
            "fifo": sum(q * q * t_fifo / (1 + q * t_fifo) for q in p),
            "optimum": sum(sorted(p, reverse=True)[:c])}


def zipf_trace(requests: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    picks = rng.choices(range(OBJECTS), weights=zipf_probabilities(OBJECTS, ALPHA), k=requests)
    return [((f"cdn /o/{i}".encode(), ""), SIZE) for i in picks]


def test_stationary_zipf_matches_theory_and_frequency_beats_recency():
    expected = theory(zipf_probabilities(OBJECTS, ALPHA), CACHED)
    trace = zipf_trace(60_000)
    got = {p: replay(trace, CACHED * SIZE, p, warmup=10_000).hit_ratio for p in ("lru", "lfu", "fifo", "wtinylfu")}
    assert abs(got["lru"] - expected["lru"]) < 0.02, (got, expected)
    assert abs(got["fifo"] - expected["fifo"]) < 0.02, (got, expected)
    # LFU and W-TinyLFU get at least halfway from LRU to the static optimum, never past it.
    halfway = (expected["lru"] + expected["optimum"]) / 2
    for policy in ("lfu", "wtinylfu"):
        assert halfway < got[policy] <= expected["optimum"] + 0.01, (policy, got, expected)
    assert got["fifo"] < got["lru"]


def test_shifting_working_set_lru_beats_lfu():
    rng = random.Random(2)
    phases, working = 5, 160  # each phase: a new set of 160 objects (the cache holds 200)
    trace = [((f"cdn /p{ph}/{rng.randrange(working)}".encode(), ""), SIZE)
             for ph in range(phases) for _ in range(20 * working)]
    # LRU keeps a whole phase's set (it fits), so it misses each object of a phase exactly once.
    cold = len({k for k, _ in trace})
    lru = replay(trace, CACHED * SIZE, "lru").hit_ratio
    assert lru == 1 - cold / len(trace)
    # LFU keeps the first phase's objects (many uses each) and leaves the new set the
    # CACHED - working slots left: at most (CACHED - working) / working of a later phase hits.
    bound = (1 - working / (20 * working)) / phases + (phases - 1) / phases * (CACHED - working) / working
    lfu = replay(trace, CACHED * SIZE, "lfu").hit_ratio
    assert lfu <= bound < lru
    # W-TinyLFU's aging lets the new set in: better than LFU here.
    assert replay(trace, CACHED * SIZE, "wtinylfu").hit_ratio > lfu


def test_byte_hit_ratio_weighs_by_size():
    trace = [((b"h /big", ""), 9000), ((b"h /small", ""), 1000)] * 2
    r = replay(trace, 20_000, "lru")
    assert (r.hits, r.hit_ratio, r.byte_hit_ratio) == (2, 0.5, 0.5)
    r = replay(trace, 9_500, "lru")  # only one fits at a time: big evicts small and back
    assert r.hits == 0 and r.evictions == 3
    r = replay([((b"h /huge", ""), 5000)] * 3, 100_000, "lru", max_object_bytes=4000)
    assert r.hits == 0  # over max_object_bytes: never stored, as in the daemon


def test_parse_size():
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1.5 KiB") == 1536 and parse_size("500MB") == 500_000_000 and parse_size("4096") == 4096
    for bad in ("", "MiB", "12 parsecs", "-1"):
        try:
            parse_size(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


keys = st.tuples(st.binary(min_size=1, max_size=40).filter(lambda b: b.strip()),
                 st.one_of(st.just(()), st.tuples(st.tuples(st.sampled_from(["accept", "cookie"]), st.binary(max_size=8)))))


@given(st.lists(st.tuples(keys, st.integers(0, 10**9)), max_size=30))
def test_trace_lines_round_trip(records):
    text = HEADER + "".join(encode(k, size) for k, size in records)
    parsed = list(parse(io.StringIO(text, newline=None)))  # as a text-mode file reads it
    assert [(k[0], s) for k, s in parsed] == [(k[0], s) for k, s in records]
    # Distinct variants of one URL stay distinct; the same variant maps to the same key.
    for (k1, _), (p1, _) in zip(records, parsed, strict=True):
        for (k2, _), (p2, _) in zip(records, parsed, strict=True):
            assert (k1 == k2) == (p1 == p2)


def test_malformed_trace_lines_are_located():
    try:
        list(parse([HEADER, "12\tok /a\n", "twelve\t/b\n"]))
    except TraceError as exc:
        assert "line 3" in str(exc)
    else:
        raise AssertionError("no error")


def test_whatif_cli_prints_each_policy_side_by_side(tmp_path):
    path = tmp_path / "zipf.trace"
    rec = TraceRecorder(path, create=True)
    for key, size in zipf_trace(20_000, seed=3):
        rec.record(key, size)
    rec.close()
    assert len(read_trace(path)) == 20_000
    base = [sys.executable, "-m", "proxy.cli", "cdn", "whatif", "--trace", str(path), "--size", "195.3125KiB"]
    out = subprocess.run(base, check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[2:6]}
    assert list(rows) == ["lru", "lfu", "fifo", "wtinylfu"]
    assert "best hit ratio:" in out.stdout
    js = subprocess.run([*base, "--json", "--policies", "lru,wtinylfu"], capture_output=True, text=True,
                        timeout=120, cwd=REPO)
    data = json.loads(js.stdout)
    assert data["size"] == CACHED * SIZE and data["requests"] == 20_000
    assert [r["policy"] for r in data["results"]] == ["lru", "wtinylfu"]
    assert f"{data['results'][0]['hit_ratio']:.4f}" == rows["lru"][0]
    bad = subprocess.run([*base[:-1], "lots"], check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "not a size" in bad.stderr
    # An existing file is never overwritten by a new recording.
    try:
        TraceRecorder(path, create=True)
    except FileExistsError:
        pass
    else:
        raise AssertionError("overwrote")
