"""RFC 5861 decisions of the cdn (proxy/cdn/rfc5861.py): stale-while-revalidate and stale-if-error.

Expected values are the RFC's rules written out here (and its section 3/4 examples), not taken
from the module.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.cachestatus import cache_status
from proxy.cdn.rfc5861 import serve_stale_on_error, serve_while_revalidate


def cc(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"cache-control", value.encode())] if value else []


windows = st.integers(min_value=0, max_value=10**7)
staleness = st.floats(min_value=-1000, max_value=2 * 10**7, allow_nan=False)
prohibiting = st.sampled_from(["no-cache", "must-revalidate", "proxy-revalidate", "s-maxage=60"])


def test_rfc5861_section_3_example():
    # "max-age=600, stale-while-revalidate=30": servable stale for up to 30 more seconds.
    resp = cc("max-age=600, stale-while-revalidate=30")
    assert serve_while_revalidate(resp, [], 29.5)
    assert serve_while_revalidate(resp, [], 30)
    assert not serve_while_revalidate(resp, [], 30.01)
    assert not serve_while_revalidate(resp, [], 0)  # not stale yet: a plain hit, nothing to revalidate


def test_rfc5861_section_4_example():
    # "max-age=600, stale-if-error=1200": usable on an error for 1200 s after becoming stale.
    resp = cc("max-age=600, stale-if-error=1200")
    for unreachable in (True, False):
        assert serve_stale_on_error(resp, [], 1199, unreachable=unreachable) == "stale-if-error"
        assert serve_stale_on_error(resp, [], 1201, unreachable=unreachable) is None


@given(windows, staleness)
def test_swr_exactly_within_the_window(n, s):
    assert serve_while_revalidate(cc(f"max-age=1, stale-while-revalidate={n}"), [], s) == (0 < s <= n)


@given(windows, st.floats(min_value=0.001, max_value=1e6), prohibiting)
def test_swr_never_against_a_prohibiting_directive(n, s, directive):
    # RFC 9111 4.2.4: no stale response against no-cache, must-revalidate, proxy-revalidate, s-maxage.
    assert not serve_while_revalidate(cc(f"max-age=1, {directive}, stale-while-revalidate={n}"), [], s)


@given(windows, st.floats(min_value=0.001, max_value=1e6),
       st.sampled_from(["no-cache", "max-age=0", "no-cache, max-age=5"]))
def test_swr_not_when_the_client_wants_a_validated_answer(n, s, req):
    assert not serve_while_revalidate(cc(f"stale-while-revalidate={n}"), cc(req), s)


@given(st.sampled_from(["", "max-age=1", "stale-while-revalidate", "stale-while-revalidate=-5",
                        "stale-while-revalidate=1.5", "stale-while-revalidate=abc", "stale-if-error=600"]),
       st.floats(min_value=0.001, max_value=1e6))
def test_swr_needs_a_valid_window(value, s):
    assert not serve_while_revalidate(cc(value), [], s)


@given(windows, staleness, st.booleans())
def test_sie_response_window(n, s, unreachable):
    got = serve_stale_on_error(cc(f"max-age=1, stale-if-error={n}"), [], s, unreachable=unreachable)
    assert got == ("stale-if-error" if s <= n else None)


@given(windows, staleness, st.booleans())
def test_sie_request_window_applies_to_that_request(n, s, unreachable):
    got = serve_stale_on_error(cc("max-age=1"), cc(f"stale-if-error={n}"), s, unreachable=unreachable)
    assert got == ("stale-if-error" if s <= n else None)


@given(windows, windows, staleness)
def test_sie_either_window_suffices(a, b, s):
    got = serve_stale_on_error(cc(f"stale-if-error={a}"), cc(f"stale-if-error={b}"), s, unreachable=False)
    assert got == ("stale-if-error" if s <= max(a, b) else None)


@given(windows, staleness, st.booleans(), prohibiting)
def test_sie_never_against_a_prohibiting_directive(n, s, unreachable, directive):
    resp = cc(f"max-age=1, {directive}, stale-if-error={n}")
    assert serve_stale_on_error(resp, cc(f"stale-if-error={n}"), s, unreachable=unreachable) is None


@given(st.floats(min_value=0.001, max_value=1e7))
def test_without_stale_if_error_only_a_disconnected_cache_serves_stale(s):
    # RFC 9111 4.2.4: a cache disconnected from the origin may serve stale; an origin's 5xx is
    # an answer, passed on.
    assert serve_stale_on_error(cc("max-age=1"), [], s, unreachable=True) == "origin-unreachable"
    assert serve_stale_on_error(cc("max-age=1"), [], s, unreachable=False) is None


def test_cache_status_of_stale_answers():
    assert cache_status(fwd="stale", ttl=-4.2, detail="stale-while-revalidate") == \
        b'tierproxy; fwd=stale; ttl=-4; detail="stale-while-revalidate"'
    assert cache_status(fwd="stale", fwd_status=503, ttl=-9, detail="stale-if-error") == \
        b'tierproxy; fwd=stale; fwd-status=503; ttl=-9; detail="stale-if-error"'
