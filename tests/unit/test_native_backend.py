"""A backend's state (proxy/upstream/backend.py, whose `Backend` and `LatencyHistogram` are extension
types when compiled: backend.pxd): the latency histogram against proxy/core/metrics.py's
`Histogram`, which it copies (the same buckets, sum, count and Prometheus pairs for the same
observations), in whichever twin is imported; and the compiled twin against the pure one
(`proxy._native.load_pure`; skipped where the module is not compiled): the same fields after the
same sets, the object fields read as member descriptors (what keeps interpreted readers fast)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.health import HealthState
from proxy.core.metrics import Histogram
from proxy.upstream.backend import Backend, LatencyHistogram
from proxy.upstream.config import BackendConfig
from tests.unit.test_native_differential import _twins

_VALUES = st.lists(st.one_of(st.floats(0, 60, allow_nan=False), st.sampled_from([0.0005, 0.001, 0.25, 30.0, 31.0])),
                   max_size=60)  # fmt: skip


@settings(max_examples=150, deadline=None)
# Bounds of any kind: the compiled `observe` compares float bounds as C doubles and any other as
# Python does (ints beyond a double's precision, duplicates, even unsorted: bisect_left's halving).
@given(_VALUES, st.sampled_from([None, (0.1, 1.0), (1, 2, 3), (), (0, 0.5, 0.5, 2**60, 2.0**61), (3.0, 1, 2.5, 0.001)]))
def test_the_latency_histogram_counts_as_the_metrics_histogram(values, bounds):
    mine = LatencyHistogram() if bounds is None else LatencyHistogram(bounds)
    ref = Histogram() if bounds is None else Histogram(bounds)
    for v in values:
        mine.observe(v)
        ref.observe(v)
    assert (mine.bounds, mine.counts, mine.count, mine.buckets()) == (ref.bounds, ref.counts, ref.count, ref.buckets())
    assert math.isclose(mine.sum, ref.sum) and mine.sum == ref.sum


def test_a_histogram_refuses_what_is_no_number():
    with pytest.raises(TypeError):
        LatencyHistogram().observe("1")  # type: ignore[arg-type]


def _backend(module):
    return module.Backend("p", BackendConfig(name="b1", address="127.0.0.1:8081", weight=3), HealthState(rise=1, fall=1))


_FIELDS = ("pool_name", "name", "address", "host", "port", "weight", "backup", "draining", "removed", "inflight",
           "open_connections", "requests", "responses", "failures", "fail_streak", "health_checks_ok",
           "health_checks_failed", "ejections", "check_loop")  # fmt: skip


def test_a_new_backend_is_what_its_config_says():
    b = _backend(__import__("proxy.upstream.backend", fromlist=["Backend"]))
    assert (b.pool_name, b.name, b.address, b.host, b.port, b.weight, b.backup) == ("p", "b1", "127.0.0.1:8081",
                                                                                     "127.0.0.1", 8081, 3, False)
    assert (b.inflight, b.requests, b.responses, list(b.idle), b.latency.count) == (0, 0, [0] * 5, [], 0)
    assert isinstance(b, Backend) and isinstance(b.latency, LatencyHistogram)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), st.one_of(st.integers(-3, 10**20), st.booleans(), st.none(),
                                                              st.text(max_size=5))), max_size=20),
       _VALUES)  # fmt: skip
def test_compiled_and_pure_backends_agree(sets, values):
    compiled, pure = _twins("proxy.upstream.backend")
    a, b = _backend(compiled), _backend(pure)
    for name, value in sets:
        setattr(a, name, value)
        setattr(b, name, value)
    for v in values:
        a.latency.observe(v)
        b.latency.observe(v)
    assert {f: getattr(a, f) for f in _FIELDS} == {f: getattr(b, f) for f in _FIELDS}
    assert (a.latency.counts, a.latency.sum, a.latency.count) == (b.latency.counts, b.latency.sum, b.latency.count)
    # Interpreted readers (pools, status pages, the cdn) keep CPython's specialised slot reads.
    assert all(type(compiled.Backend.__dict__[f]).__name__ == "member_descriptor" for f in _FIELDS)
