"""The failed-login limiter (proxy/dbproxy/login_limits.py): a sliding window per address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.pgfront.login_limits import LoginLimiter


def test_an_address_is_blocked_after_the_limit_and_free_again_a_window_later():
    lim = LoginLimiter(3, window=60.0)
    for t in (0.0, 1.0, 2.0):
        assert not lim.blocked("10.0.0.1", t)
        lim.failed("10.0.0.1", t)
    assert lim.blocked("10.0.0.1", 2.5)
    assert not lim.blocked("10.0.0.2", 2.5)  # another address is not affected
    assert lim.blocked("10.0.0.1", 59.9)
    # the first failure (t=0) leaves the window at t=60: one more attempt is allowed
    assert not lim.blocked("10.0.0.1", 60.0)
    assert lim.count("10.0.0.1", 60.0) == 2
    assert lim.count("10.0.0.1", 62.0) == 0
    assert len(lim) == 0  # forgotten once nothing is left in the window


def test_zero_means_no_limit():
    lim = LoginLimiter(0)
    for t in range(1000):
        lim.failed("10.0.0.1", float(t) / 100)
    assert not lim.blocked("10.0.0.1", 10.0)
    assert len(lim) == 0


def test_the_number_of_addresses_remembered_is_bounded_oldest_failing_first():
    lim = LoginLimiter(1, window=60.0, max_addresses=3)
    for i, addr in enumerate(("a", "b", "c")):
        lim.failed(addr, float(i))
    lim.failed("a", 3.0)  # a failed again: now the most recent
    lim.failed("d", 4.0)  # over the bound: b, whose newest failure is oldest, is forgotten
    assert len(lim) == 3
    assert not lim.blocked("b", 5.0)
    assert lim.blocked("a", 5.0) and lim.blocked("c", 5.0) and lim.blocked("d", 5.0)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5, allow_nan=False)), max_size=60),
       st.integers(1, 5))
def test_blocked_exactly_when_limit_failures_fall_in_the_last_window(events, limit):
    lim = LoginLimiter(limit, window=2.0)
    now = 0.0
    seen: dict[str, list[float]] = {}
    for addr, step in events:
        now += step
        lim.failed(addr, now)
        seen.setdefault(addr, []).append(now)
        for a, times in seen.items():
            recent = [t for t in times if now - t < 2.0]
            assert lim.blocked(a, now) == (len(recent) >= limit), (a, times, now)
