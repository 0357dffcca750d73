"""RFC 9111 decisions of the cdn (proxy/cdn/rfc9111.py) and its RFC 9211 Cache-Status values.

Expected values come from the RFC's text and examples, written out here, not from the module.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.cachestatus import cache_status
from proxy.cdn.rfc9111 import (
    DELTA_MAX,
    conditional_headers,
    current_age,
    freshness_lifetime,
    merge_304,
    parse_cache_control,
    parse_http_date,
    storable,
    stored_headers,
    vary_key,
)

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 9110 5.6.7's example: 784111777
DATE_TS = 784111777.0


def h(**fields: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()]


def test_http_date_three_forms():
    assert parse_http_date(DATE) == DATE_TS
    assert parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == DATE_TS
    assert parse_http_date(b"Sun Nov  6 08:49:37 1994") == DATE_TS
    assert parse_http_date(b"not a date") is None
    assert parse_http_date(None) is None


def test_cache_control_parsing_quotes_case_first_wins():
    cc = parse_cache_control([(b"cache-control", b'Max-Age=10, private="set-cookie, x-a", max-age=99'),
                              (b"cache-control", b"no-cache")])
    assert cc == {b"max-age": b"10", b"private": b"set-cookie, x-a", b"no-cache": None}


# --- storability (RFC 9111 section 3, 3.5) -------------------------------------------------------

@pytest.mark.parametrize("resp,req,expected", [
    (h(cache_control="max-age=60"), [], (True, "stored")),
    (h(cache_control="no-store, max-age=60"), [], (False, "no-store")),
    (h(cache_control="max-age=60"), h(cache_control="no-store"), (False, "request-no-store")),
    (h(cache_control="private, max-age=60"), [], (False, "private")),
    (h(cache_control="max-age=60"), h(authorization="Basic eDp5"), (False, "authorization")),
    (h(cache_control="public, max-age=60"), h(authorization="Basic eDp5"), (True, "stored")),
    (h(cache_control="s-maxage=60"), h(authorization="Basic eDp5"), (True, "stored")),
    (h(cache_control="must-revalidate, max-age=5"), h(authorization="Basic eDp5"), (True, "stored")),
    (h(cache_control="max-age=60", set_cookie="sid=1"), [], (False, "set-cookie")),
    (h(cache_control="public, max-age=60", set_cookie="sid=1"), [], (False, "set-cookie")),
    (h(cache_control='max-age=60, private="Set-Cookie"', set_cookie="sid=1"), [], (True, "stored")),
    (h(cache_control='max-age=60, no-cache="set-cookie"', set_cookie="sid=1"), [], (True, "stored")),
    (h(cache_control="max-age=60", vary="Accept, *"), [], (False, "vary-star")),
    (h(expires="Thu, 01 Dec 1994 16:00:00 GMT"), [], (True, "stored")),
])
def test_storable_table(resp, req, expected):
    d = storable(b"GET", req, 200, resp)
    assert (d.store, d.reason) == expected


def test_storable_method_and_status():
    ok = h(cache_control="max-age=60")
    assert storable(b"POST", [], 200, ok).store is False
    assert storable(b"HEAD", [], 200, ok).store is False  # HEAD is served from a stored GET
    for status in (100, 206, 304):
        assert storable(b"GET", [], status, ok).store is False
    # Without explicit freshness only heuristically cacheable statuses are stored (RFC 9110 15.1).
    assert storable(b"GET", [], 200, []).store is True
    assert storable(b"GET", [], 302, []).reason == "no-freshness"
    assert storable(b"GET", [], 302, h(cache_control="public")).store is True


DIRECTIVES = st.sets(st.sampled_from(["no-store", "private", "public", "s-maxage=5", "max-age=5",
                                      "must-revalidate", "no-cache"]))


@given(DIRECTIVES, st.booleans(), st.booleans(), st.sampled_from([200, 203, 302, 404, 500]))
def test_storable_follows_rfc_rules(directives, auth, cookie, status):
    resp = [(b"cache-control", ", ".join(sorted(directives)).encode())] if directives else []
    if cookie:
        resp.append((b"set-cookie", b"a=b"))
    req = [(b"authorization", b"Bearer t")] if auth else []
    d = storable(b"GET", req, status, resp)
    expected = True
    if "no-store" in directives or "private" in directives:
        expected = False
    if auth and not directives & {"public", "s-maxage=5", "must-revalidate"}:
        expected = False
    if cookie:
        expected = False
    if not (directives & {"public", "s-maxage=5", "max-age=5"} or status in (200, 203, 404)):
        expected = False
    assert d.store is expected


def test_stored_headers_never_keep_set_cookie_or_qualified_private():
    resp = h(cache_control='max-age=1, private="x-user"', set_cookie="a=b", x_user="bob",
             connection="close", etag='"1"')
    assert stored_headers(resp) == [(b"cache-control", b'max-age=1, private="x-user"'), (b"etag", b'"1"')]


# --- freshness lifetime (4.2.1, 4.2.2) ----------------------------------------------------------

@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_s_maxage_wins_over_max_age_and_expires(s, m):
    resp = [(b"cache-control", f"max-age={m}, s-maxage={s}".encode()), (b"date", DATE),
            (b"expires", b"Sun, 06 Nov 1994 09:49:37 GMT")]
    assert freshness_lifetime(resp, 200) == min(s, DELTA_MAX)


@given(st.integers(0, 10**6))
def test_max_age_wins_over_expires(m):
    resp = [(b"cache-control", f"max-age={m}".encode()), (b"date", DATE),
            (b"expires", b"Sun, 06 Nov 1994 09:49:37 GMT")]
    assert freshness_lifetime(resp, 200) == m


@given(st.integers(-10**6, 10**6))
def test_expires_minus_date(delta):
    import email.utils
    expires = email.utils.formatdate(DATE_TS + delta, usegmt=True).encode()
    resp = [(b"date", DATE), (b"expires", expires)]
    assert freshness_lifetime(resp, 200) == max(0, delta)


def test_invalid_values_are_stale():
    assert freshness_lifetime(h(cache_control="max-age=ten"), 200) == 0
    assert freshness_lifetime(h(date=DATE.decode(), expires="0"), 200) == 0
    assert freshness_lifetime(h(cache_control="s-maxage=-1, max-age=60"), 200) == 0


def test_heuristic_only_where_allowed():
    lm = "Sun, 06 Nov 1994 06:49:37 GMT"  # two hours before Date
    assert freshness_lifetime(h(date=DATE.decode(), last_modified=lm), 200) == 720.0  # 10 % of 7200
    assert freshness_lifetime(h(date=DATE.decode(), last_modified=lm), 302) == 0
    assert freshness_lifetime(h(date=DATE.decode(), last_modified=lm, cache_control="public"), 302) == 720.0
    assert freshness_lifetime(h(date=DATE.decode()), 200) == 0  # nothing to base it on
    assert freshness_lifetime(h(date=DATE.decode(), last_modified=lm), 200, heuristic_max=60) == 60


# --- age (4.2.3) --------------------------------------------------------------------------------

@given(st.integers(0, 10**5), st.floats(0, 100), st.floats(0, 100), st.floats(0, 10**5), st.floats(-50, 50))
def test_current_age_formula(age, delay, resident, _unused, date_skew):
    request_time = DATE_TS - date_skew
    response_time = request_time + delay
    now = response_time + resident
    resp = [(b"date", DATE), (b"age", str(age).encode())]
    apparent = max(0.0, response_time - DATE_TS)
    expected = max(apparent, age + delay) + resident
    assert current_age(resp, request_time, response_time, now) == pytest.approx(expected)
    assert current_age(resp, request_time, response_time, now) >= age


# --- Vary (4.1) ---------------------------------------------------------------------------------

def test_vary_secondary_key():
    resp = h(vary="Accept-Encoding, accept-language")
    a = vary_key(resp, h(accept_encoding="gzip,  br", accept_language="en"))
    b = vary_key(resp, h(accept_encoding="gzip, br", accept_language="en", cookie="x"))
    c = vary_key(resp, h(accept_encoding="identity", accept_language="en"))
    d = vary_key(resp, h(accept_language="en"))
    assert a == b
    assert a != c and a != d and c != d
    assert vary_key(h(vary="*"), []) is None
    assert vary_key([], h(accept="x")) == ()


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1), st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.text("xyz", min_size=1)),
       st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.text("xyz", min_size=1)))
def test_vary_key_equal_iff_named_fields_equal(names, req1, req2):
    resp = [(b"vary", ", ".join(names).encode())]
    k1 = vary_key(resp, [(n.encode(), v.encode()) for n, v in req1.items()])
    k2 = vary_key(resp, [(n.encode(), v.encode()) for n, v in req2.items()])
    assert (k1 == k2) == all(req1.get(n) == req2.get(n) for n in names)


# --- revalidation (4.3) -------------------------------------------------------------------------

def test_conditional_headers_and_304_merge():
    stored = h(etag='"v1"', last_modified=DATE.decode(), cache_control="max-age=1", content_length="5")
    assert conditional_headers(stored) == [(b"if-none-match", b'"v1"'), (b"if-modified-since", DATE)]
    assert conditional_headers(h(cache_control="max-age=1")) == []
    merged = merge_304(stored, h(etag='"v1"', cache_control="max-age=60", content_length="0", x_new="1"))
    assert dict(merged) == {b"etag": b'"v1"', b"last-modified": DATE, b"cache-control": b"max-age=60",
                            b"content-length": b"5", b"x-new": b"1"}
    assert merge_304(stored, h(etag='"v2"')) is None  # a different strong validator: not this one
    assert merge_304(stored, h(cache_control="max-age=9")) is not None


# --- Cache-Status (RFC 9211) --------------------------------------------------------------------

def test_cache_status_values():
    assert cache_status(hit=True, ttl=12.7) == b"tierproxy; hit; ttl=12"
    assert cache_status(fwd="miss", fwd_status=200, stored=True) == b"tierproxy; fwd=miss; fwd-status=200; stored"
    assert cache_status(fwd="stale", ttl=-3.2, detail='origin "down"') == \
        b'tierproxy; fwd=stale; ttl=-3; detail="origin \\"down\\""'
    assert cache_status(fwd="uri-miss", collapsed=True) == b"tierproxy; fwd=uri-miss; collapsed"
    with pytest.raises(ValueError):
        cache_status(fwd="nope")
