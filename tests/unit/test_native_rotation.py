"""Differential tests of the compiled balancers (proxy/lb/rotation.py: `Balancer`, `RoundRobin`,
`WeightedRoundRobin`, extension types when compiled): hypothesis drives the compiled ones and their
pure-Python twins (`proxy._native.load_pure`) through the same picks over the same candidate tuples
(the same tuple again, a new one, a smaller one, an empty one, other weights) and requires the
same picks and current weights, and the same errors for bad memberships and options. Also: the
pool's compiled pick reaches a Python subclass's own `pick` (balancer.py's other algorithms).
Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.lb.balancer import ALGORITHMS, LeastConn
from tests.unit.test_native_differential import _twins


@dataclass(eq=False)
class Host:
    name: str
    weight: int = 1
    inflight: int = 0


NAMES = ["a", "b", "c", "d", "e"]
# A step: pick from the candidates of index k among the drawn tuples (or a fresh copy of it).
STEPS = st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=40)
WEIGHTS = st.dictionaries(st.sampled_from(NAMES), st.integers(1, 7), max_size=5)


def trace(mod, algorithm: str, members: dict[str, int], tuples: list[dict[str, int]], steps) -> list:
    cls = {"round_robin": mod.RoundRobin, "weighted_round_robin": mod.WeightedRoundRobin}[algorithm]
    b = cls(list(members.items()))
    cands = [tuple(Host(n, w) for n, w in t.items()) for t in tuples]
    out: list = [repr(b), b.members, b.name]
    for k, fresh in steps:
        c = cands[k % len(cands)]
        if fresh:
            c = tuple(c)  # the same hosts in a new tuple: a rebind
            cands[k % len(cands)] = c
        got = b.pick(c, None)
        out.append(None if got is None else got.name)
        if algorithm == "weighted_round_robin":
            out.append(b.current_weights())
    return out


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["round_robin", "weighted_round_robin"]), WEIGHTS, st.lists(WEIGHTS, min_size=1, max_size=4),
       STEPS)
def test_picks_compiled_are_pure(algorithm, members, tuples, steps):
    compiled, pure = _twins("proxy.lb.rotation")
    assert trace(compiled, algorithm, members, tuples, steps) == trace(pure, algorithm, members, tuples, steps)


def _error(fn) -> tuple:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return type(exc).__name__, str(exc)
    return ("ok",)


def test_bad_members_and_options_compiled_are_pure():
    compiled, pure = _twins("proxy.lb.rotation")
    for cls in ("RoundRobin", "WeightedRoundRobin", "Balancer"):
        for args, kw in (([("a", 1), ("a", 2)], {}), ([("a", 0)], {}), ([("a", 1)], {"load_factr": 2.0}), ([], {})):
            got = _error(lambda: getattr(compiled, cls)(args, **kw))
            want = _error(lambda: getattr(pure, cls)(args, **kw))
            assert got == want, (cls, args, kw)
    assert _error(lambda: compiled.Balancer([]).pick(())) == _error(lambda: pure.Balancer([]).pick(())) == (
        "NotImplementedError", "")


def test_compiled_base_dispatches_to_python_subclasses():
    """PoolCore.pick calls `pick` through the compiled base's C entry: a Python subclass's own
    `pick` must be the one that runs (least_conn prefers the idle host, round robin would not)."""
    compiled, _ = _twins("proxy.lb.rotation")
    assert issubclass(LeastConn, compiled.Balancer) and ALGORITHMS["round_robin"] is compiled.RoundRobin
    from proxy.lb.clientcore import PoolCore

    class P(PoolCore):
        __slots__ = ()

    busy, idle = Host("a", inflight=5), Host("b")
    pool = P()
    pool._balancer = LeastConn([("a", 1), ("b", 1)])
    pool._eligible = (busy, idle)
    pool._eligible_backup = False
    assert [pool.pick(0.0).name for _ in range(4)] == ["b"] * 4
    pool._balancer = compiled.RoundRobin([("a", 1), ("b", 1)])
    assert [pool.pick(0.0).name for _ in range(4)] == ["a", "b", "a", "b"]
