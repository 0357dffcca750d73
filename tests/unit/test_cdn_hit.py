"""The cdn's plain-hit path (proxy/cdn/hit.py, Engine._plain_hit): what is computed once per stored
object gives, on every hit, the answer RFC 9111 asks for, byte for byte the one the general path
gives.

Expected ages and heads are written out here from RFC 9111 4.2.3 and RFC 9211, not taken from the
module; the general path (`Engine._from_entry` and the server's serialisation) is the reference
for the equivalence properties.
"""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cdn.cachestatus import cache_status
from proxy.cdn.config import CdnConfig
from proxy.cdn.engine import _NOT_TO_CLIENT, Engine
from proxy.cdn.hit import hit_format, hit_info, hit_wire, plain_request
from proxy.cdn.rfc9111 import current_age, initial_age, vary_key, vary_key_for, vary_names
from proxy.cdn.store import Entry
from proxy.http1 import RequestParser, write_response_head

T0 = 1_700_000_000.0


def http_date(ts: float) -> bytes:
    return email.utils.formatdate(ts, usegmt=True).encode()


@given(st.integers(0, 10**6), st.floats(0, 100), st.floats(0, 10**5), st.integers(-10**4, 10**4), st.booleans())
def test_initial_age_is_rfc_9111_corrected_initial_age(age, delay, resident, date_skew, with_date):
    """corrected_initial_age = max(apparent_age, Age + response_delay), apparent_age =
    max(0, response_time - Date); current_age adds the resident time."""
    t_req = T0
    t_resp = T0 + delay
    date = float(int(t_resp) - date_skew)
    fields = [(b"age", b"%d" % age)] + ([(b"date", http_date(date))] if with_date else [])
    apparent = max(0.0, t_resp - date) if with_date else 0.0
    expected = max(apparent, age + delay)
    # approx: T0 + delay - T0 is not exactly delay in floating point.
    assert initial_age(fields, t_req, t_resp) == pytest.approx(expected, abs=1e-6)
    assert current_age(fields, t_req, t_resp, t_resp + resident) == pytest.approx(expected + resident, abs=1e-6)
    # A clock that went backwards adds no resident time (never a younger object).
    assert current_age(fields, t_req, t_resp, t_resp - 5) == pytest.approx(expected, abs=1e-6)


FIELD = st.sampled_from([b"accept", b"accept-language", b"accept-encoding", b"x-a", b"cookie"])


@given(st.lists(FIELD, max_size=4), st.lists(st.tuples(FIELD, st.sampled_from([b"en", b"fr", b"a,  b", b""])),
                                               max_size=5))
def test_vary_names_give_the_same_secondary_key(names, req):
    resp = [(b"vary", b", ".join(names))] if names else []
    assert vary_key_for(vary_names(resp), req) == vary_key(resp, req)
    assert vary_names(resp) == tuple(sorted(set(names)))
    assert vary_names([(b"vary", b"accept, *")]) is None


def test_plain_request_recognises_every_field_that_changes_a_hit():
    assert plain_request(b"Host: a\r\nUser-Agent: x\r\nAccept: */*\r\n", None)
    assert plain_request(None, [(b"host", b"a"), (b"accept", b"*/*")])
    for line in (b"Cache-Control: no-cache", b"cache-control: max-age=0", b"If-None-Match: \"x\"",
                 b"IF-MODIFIED-SINCE: Sun, 06 Nov 1994 08:49:37 GMT", b"Range: bytes=0-1", b"If-Range: \"x\""):
        assert not plain_request(b"Host: a\r\n" + line + b"\r\n", None), line
        assert not plain_request(line + b"\r\nHost: a\r\n", None), line
        name, _, value = line.partition(b": ")
        assert not plain_request(None, [(b"host", b"a"), (name.lower(), value)]), line
    # A value that merely mentions one of those names is still plain.
    assert plain_request(b"Host: a\r\nX-Note: range: cache-control\r\n", None)


def test_hit_wire_is_the_rfc_9211_head():
    stored = [(b"content-type", b"text/plain"), (b"age", b"7"), (b"cache-control", b"max-age=60"),
              (b"content-length", b"5"), (b"surrogate-key", b"a b"), (b"etag", b'"v1"')]
    info = hit_info(200, stored, 5, T0, T0, _NOT_TO_CLIENT)
    assert info.initial_age == 7 and not info.no_cache and info.vary == ()
    wire = hit_wire(info, 12.9, 47.8, hit_format(b"tierproxy; hit"))
    assert wire == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: max-age=60\r\n"
                    b'etag: "v1"\r\nage: 12\r\ncache-status: tierproxy; hit; ttl=47\r\ncontent-length: 5\r\n\r\n')
    # A "%" in the cache's name is no format directive.
    assert b"cache-status: 100%; hit; ttl=3\r\n" in hit_wire(info, 0, 3, hit_format(b"100%; hit"))
    assert hit_info(200, [(b"cache-control", b"no-cache, max-age=9")], 0, T0, T0, ()).no_cache


# -- the engine: plain hits against the general path --------------------------------------------

def _head(raw: bytes, simple: bool):
    parser = RequestParser()
    if simple:
        head = parser.feed_simple(raw)
        assert head is not None and head.raw_fields is not None
        return head
    events = parser.feed(raw)
    return events[0]


def _general(engine: Engine, head, entry: Entry, now: float) -> bytes:
    """What `handle` gave before the plain-hit path: `_from_entry`, serialised as the server does."""
    age = current_age(entry.headers, entry.request_time, entry.response_time, now)
    ttl = entry.lifetime - age
    answer = engine._from_entry(head, entry, age, cache_status(engine.cfg.cache.name, hit=True, ttl=ttl))
    return write_response_head(answer.status, answer.headers) + answer.body


REQUEST_FIELDS = st.lists(st.sampled_from([b"Accept: text/html", b"Accept-Language: fr", b"Accept-Language: en",
                                           b"User-Agent: t", b"X-A: 1"]), max_size=3)


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from([b"GET", b"HEAD"]), extra=REQUEST_FIELDS, simple=st.booleans(),
       age=st.integers(0, 50), delay=st.floats(0, 3), resident=st.floats(0, 200), lifetime=st.sampled_from([0.0, 30.0, 100.0, 1e6]),
       vary=st.sampled_from([b"", b"accept-language", b"accept, x-a"]), cc=st.sampled_from([b"max-age=100", b"no-cache", b"public"]),
       status=st.sampled_from([200, 404, 204]), lazy=st.booleans(), name=st.sampled_from(["tierproxy", "edge-1"]))
def test_plain_hit_equals_the_general_path(method, extra, simple, age, delay, resident, lifetime, vary, cc, status,
                                           lazy, name):
    now = T0 + delay + resident
    engine = Engine(CdnConfig(origins=["127.0.0.1:1"], cache={"name": name}), clock=lambda: now)
    stored = [(b"date", http_date(T0)), (b"cache-control", cc), (b"age", b"%d" % age), (b"etag", b'"e"'),
              (b"content-length", b"11"), (b"cache-tag", b"t")] + ([(b"vary", vary)] if vary else [])
    raw = b"%s /obj?q=1 HTTP/1.1\r\nHost: Example.org\r\n%s\r\n" % (method, b"".join(f + b"\r\n" for f in extra))
    head = _head(raw, simple)
    req = head.fields()
    secondary = vary_key(stored, req)
    entry = Entry(status, stored, b"hello world", T0, T0 + delay, lifetime, vary=secondary)
    if not lazy:
        engine._hot(entry)
    engine.store.put((b"example.org /obj?q=1", secondary), entry)
    fresh = lifetime - current_age(stored, T0, T0 + delay, now) > 0 and cc != b"no-cache"
    answer = engine._plain_hit(head, b"example.org /obj?q=1")
    if not fresh:
        assert answer is None  # the general path decides (revalidation)
        return
    assert answer is not None and answer[0] == status
    assert answer[1] + answer[2] == _general(engine, head, entry, now)
    assert engine.counters["hits"] == 1 and entry.hits == 1
    # Another request's Vary fields select no stored variant: not a hit.
    if vary:
        other = _head(b"GET /obj?q=1 HTTP/1.1\r\nHost: example.org\r\nAccept-Language: de\r\nAccept: x\r\nX-A: 2\r\n\r\n",
                      simple)
        assert engine._plain_hit(other, b"example.org /obj?q=1") is None


def test_soft_purged_object_is_not_a_plain_hit():
    engine = Engine(CdnConfig(origins=["127.0.0.1:1"]), clock=lambda: T0 + 1)
    entry = Entry(200, [(b"cache-control", b"max-age=100")], b"x", T0, T0, 100.0)
    engine.store.put((b"a /", ()), entry)
    head = _head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True)
    assert engine._plain_hit(head, b"a /") is not None
    engine.store.purge(b"a /", soft=True)
    assert engine._plain_hit(head, b"a /") is None


def test_handle_answers_a_plain_hit_without_the_origin():
    """Through `handle` (the origin at port 1 is never asked: a hit must not need it)."""
    engine = Engine(CdnConfig(origins=["127.0.0.1:1"]), clock=lambda: T0 + 1)
    engine.store.put((b"a /x", ()), Entry(200, [(b"cache-control", b"max-age=100")], b"body", T0, T0, 100.0))
    head = _head(b"GET /x HTTP/1.1\r\nHost: A\r\n\r\n", True)
    answer = asyncio.run(engine.handle(head))
    assert answer.wire == (b"HTTP/1.1 200 OK\r\ncache-control: max-age=100\r\nage: 1\r\n"
                           b"cache-status: tierproxy; hit; ttl=99\r\ncontent-length: 4\r\n\r\n")
    assert answer.body == b"body" and engine.counters["origin_requests"] == 0
