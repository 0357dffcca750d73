"""proxy/cdn/originpool.py's choice of an origin server: a rotation over the healthy ones, each
`weight` times, backups only when no other is up, None when every one is down; reloads keep the
state of servers that stay."""

from __future__ import annotations

from collections import Counter

from proxy.cdn.originpool import OriginPool
from proxy.upstream.config import BackendConfig, HealthConfig

NONE = HealthConfig(type="none", rise=1, fall=1)  # one result flips a server


def servers(*specs):
    return [BackendConfig(name=n, address=f"127.0.0.1:{i + 1}", **kw) for i, (n, kw) in enumerate(specs)]


def picks(pool, n):
    return Counter(pool.pick().name for _ in range(n))


def test_rotation_by_weight_and_exclusion():
    pool = OriginPool(servers(("a", {}), ("b", {"weight": 3})), NONE, 8)
    assert picks(pool, 400) == {"a": 100, "b": 300}
    a, b = pool.backends["a"], pool.backends["b"]
    assert {pool.pick((b,)) for _ in range(5)} == {a}
    assert pool.pick((a, b)) is None


def test_down_servers_are_skipped_and_backups_wait():
    pool = OriginPool(servers(("a", {}), ("b", {}), ("spare", {"backup": True})), NONE, 8)
    assert set(picks(pool, 10)) == {"a", "b"}
    pool.backends["a"].health.record(False, "tcp connect failed: refused")
    pool.invalidate()
    assert set(picks(pool, 10)) == {"b"}
    pool.backends["b"].health.record(False, "http status 503")
    pool.invalidate()
    assert set(picks(pool, 10)) == {"spare"}
    pool.backends["spare"].health.record(False, "timed out")
    pool.invalidate()
    assert pool.pick() is None
    assert pool.down_reason() == "a: tcp connect failed: refused; b: http status 503; spare: timed out"


def test_checked_servers_start_down_until_their_first_check():
    pool = OriginPool(servers(("a", {})), HealthConfig(type="tcp"), 8)
    assert pool.pick() is None and pool.down_reason() == "a: not checked yet"


def test_reload_keeps_servers_that_stay():
    pool = OriginPool(servers(("a", {}), ("b", {})), NONE, 8)
    a = pool.backends["a"]
    a.requests = 7
    pool.apply(servers(("a", {"weight": 2}), ("c", {})), NONE, 4)
    assert pool.backends["a"] is a and a.requests == 7 and a.weight == 2
    assert set(pool.backends) == {"a", "c"} and pool.max_idle == 4
    assert picks(pool, 30) == {"a": 20, "c": 10}
