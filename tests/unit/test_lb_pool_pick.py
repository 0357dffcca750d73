"""The pool's pick (`Pool.pick`, PoolCore's in lb/clientcore.py: a C method when compiled, which the
compiled exchange calls in C): the cached eligible set through the pool's balancer, a retry's
exclusions, the backups only when no primary is left, None when nothing is eligible; and, compiled,
the fields Pool's interpreted code reads are member descriptors."""

from __future__ import annotations

import pytest

from proxy import _native
from proxy.lb.config import LbConfig
from proxy.lb.pool import Pool


def _pool(algorithm: str = "round_robin") -> Pool:
    cfg = LbConfig.model_validate({"pools": {"p": {"algorithm": algorithm, "backends": [
        {"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:2"},
        {"name": "spare", "address": "127.0.0.1:3", "backup": True}]}}})  # fmt: skip
    return Pool("p", cfg.pools["p"], lambda b: None, lambda b: None)


def _names(picks) -> list[str | None]:
    return [b.name if b is not None else None for b in picks]


def test_picks_rotate_over_the_primaries():
    pool = _pool()
    assert _names(pool.pick(0.0) for _ in range(5)) == ["a", "b", "a", "b", "a"]


def test_a_retry_excludes_what_it_tried_and_falls_back_to_the_backup():
    pool = _pool()
    a, b = pool.backends["a"], pool.backends["b"]
    assert _names([pool.pick(0.0, None, (a,)), pool.pick(0.0, None, (a,))]) == ["b", "b"]
    assert _names([pool.pick(0.0, None, (a, b))]) == ["spare"]
    assert pool.pick(0.0, None, (a, b, pool.backends["spare"])) is None


def test_the_backup_serves_only_when_no_primary_is_eligible():
    pool = _pool("weighted_round_robin")
    pool.set_draining("a", True)
    pool.set_draining("b", True)
    assert _names(pool.pick(0.0) for _ in range(2)) == ["spare", "spare"]
    pool.set_draining("a", False)
    assert _names(pool.pick(0.0) for _ in range(2)) == ["a", "a"]
    pool.set_draining("spare", True)
    pool.set_draining("a", True)
    assert pool.pick(0.0) is None


@pytest.mark.skipif(_native.pure_requested(), reason="the pure pass")
def test_compiled_the_pools_hot_fields_are_slots_for_python():
    if _native.status()["modules"]["proxy.lb.clientcore"] != "compiled":
        pytest.skip("no native build of proxy.lb.clientcore here")
    from proxy.lb.clientcore import PoolCore

    pool = _pool()
    assert isinstance(pool, PoolCore) and type(PoolCore.__dict__["pick"]).__name__ != "function"  # compiled
    # The balancers are typed fields (pick calls theirs in C): Cython's checked getsets.
    balancers = ("_balancer", "_backup_balancer")
    assert all(type(PoolCore.__dict__[n]).__name__ == "member_descriptor" for n in PoolCore.__slots__
               if n not in balancers)  # fmt: skip
    with pytest.raises(TypeError):
        pool._balancer = object()
    pool.no_backend_total += 2
    assert pool.no_backend_total == 2 and pool.name == "p"  # the rest in the instance dict
