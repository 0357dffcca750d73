"""lb/h2fields.py: the one-pass request/trailer field check, against hand-written RFC 9113 cases
and against the `h2` library's own validator (h2.utilities.validate_headers, an independent
implementation of the same rules) on the same cases and on generated header lists (hypothesis)."""

from __future__ import annotations

import pytest
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers
from hypothesis import given
from hypothesis import strategies as st

from proxy.lb.h2fields import request_fields_error, trailer_fields_error

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"site.test"), (b":path", b"/")]
REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
TRAILER = HeaderValidationFlags(is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False)


def h2_says_bad(fields, flags=REQUEST) -> bool:
    try:
        list(validate_headers(fields, flags))
    except ProtocolError:
        return True
    return False


GOOD = [
    BASE,
    BASE + [(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-empty", b"")],
    BASE + [(b"te", b"trailers"), (b"te", b"Trailers")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"site.test")],
    BASE + [(b"host", b"site.test")],
    [(b":method", b"CONNECT"), (b":authority", b"site.test:443")],
    [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/c"),
     (b":authority", b"site.test")],
    BASE + [(b"x-v", b"in ner\tspace"), (b"x-bytes", bytes(range(0x80, 0x100)))],
]
BAD = [
    ("no :method", BASE[1:]),
    ("no :path", [f for f in BASE if f[0] != b":path"]),
    ("no :scheme", [f for f in BASE if f[0] != b":scheme"]),
    ("empty :path", [f if f[0] != b":path" else (b":path", b"") for f in BASE]),
    ("repeated pseudo", BASE + [(b":path", b"/again")]),
    ("pseudo after regular", BASE[:3] + [(b"accept", b"*/*"), BASE[3]]),
    ("unknown pseudo", BASE + [(b":custom", b"x")]),
    ("response pseudo", BASE + [(b":status", b"200")]),
    (":protocol without CONNECT", BASE + [(b":protocol", b"websocket")]),
    ("CONNECT with :path", [(b":method", b"CONNECT"), (b":authority", b"a"), (b":path", b"/")]),
    ("upper case name", BASE + [(b"Accept", b"*/*")]),
    ("empty name", BASE + [(b"", b"x")]),
    ("space in name", BASE + [(b"x y", b"x")]),
    ("colon in name", BASE + [(b"x:y", b"x")]),
    ("DEL in name", BASE + [(b"x\x7f", b"x")]),
    ("high byte in name", BASE + [(b"x\xc3\xa9", b"x")]),
    ("connection", BASE + [(b"connection", b"keep-alive")]),
    ("keep-alive", BASE + [(b"keep-alive", b"5")]),
    ("transfer-encoding", BASE + [(b"transfer-encoding", b"chunked")]),
    ("upgrade", BASE + [(b"upgrade", b"h2c")]),
    ("proxy-connection", BASE + [(b"proxy-connection", b"close")]),
    ("te gzip", BASE + [(b"te", b"gzip")]),
    ("NUL in value", BASE + [(b"x", b"a\x00b")]),
    ("CR in value", BASE + [(b"x", b"a\rb")]),
    ("LF in value", BASE + [(b"x", b"a\nb")]),
    ("leading space", BASE + [(b"x", b" a")]),
    ("trailing tab", BASE + [(b"x", b"a\t")]),
    ("bad pseudo value", [(b":method", b"GET "), *BASE[1:]]),
    ("neither authority nor host", [f for f in BASE if f[0] != b":authority"]),
    ("authority and host differ", BASE + [(b"host", b"other.test")]),
    ("two hosts", [f for f in BASE if f[0] != b":authority"] + [(b"host", b"a"), (b"host", b"a")]),
]


@pytest.mark.parametrize("fields", GOOD)
def test_well_formed_requests_pass(fields):
    assert request_fields_error(fields) is None
    assert not h2_says_bad(fields)


@pytest.mark.parametrize(("case", "fields"), BAD, ids=[c for c, _ in BAD])
def test_malformed_requests_are_refused_as_h2_refuses_them(case, fields):
    assert request_fields_error(fields) is not None, case
    assert h2_says_bad(fields), case


def test_trailers():
    assert trailer_fields_error([(b"x-checksum", b"abc")]) is None
    for bad in ([(b":path", b"/")], [(b"X", b"1")], [(b"x", b"a\nb")], [(b"connection", b"close")]):
        assert trailer_fields_error(bad) is not None, bad
        assert h2_says_bad(bad, TRAILER), bad


_names = st.sampled_from([b":method", b":scheme", b":path", b":authority", b":protocol", b":status", b"host",
                          b"te", b"connection", b"accept", b"Accept", b"x:y", b"", b"cookie", b"x y"])  # fmt: skip
_values = st.sampled_from([b"GET", b"CONNECT", b"https", b"/", b"", b"site.test", b"trailers", b"gzip",
                           b" pad", b"a\x00", b"a\r\nb", b"tab\t", b"/x", b"other"])  # fmt: skip


@given(st.lists(st.tuples(_names, _values), max_size=8))
def test_same_verdict_as_h2_on_generated_lists(fields):
    ours = request_fields_error(fields)
    assert (ours is not None) == h2_says_bad(fields), (fields, ours)


# -- simple_response_fields: the same list as the full parser and strip_hop_by_hop --------------

from bench import realistic  # noqa: E402
from proxy.http1 import ResponseHead, ResponseParser, strip_hop_by_hop  # noqa: E402
from proxy.http1._simple import cut_connection  # noqa: E402
from proxy.lb.h2fields import simple_response_fields  # noqa: E402

_RESP_NAMES = [b"Server", b"content-type", b"X-Thing", b"Set-Cookie", b"Date", b"ETag", b"Vary", b"cache-control"]
_RESP_VALUES = [b"nginx", b"text/html; charset=utf-8", b"", b"  padded\t", b"a=1; Path=/", b"\"abc\"", b"\xe9t\xe9"]


def _full_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    """What the HTTP/2 path made of a response before: the full parser, hop-by-hop fields gone."""
    parser = ResponseParser()
    parser.expect(b"GET")
    head = next(ev for ev in parser.feed(data) if type(ev) is ResponseHead)
    return [(b":status", b"%d" % head.status), *strip_hop_by_hop(head.headers)]


def _simple_fields(data: bytes) -> list[tuple[bytes, bytes]] | None:
    parser = ResponseParser()
    parser.expect(b"GET")
    got = parser.feed_simple(data)
    if got is None:
        return None
    status, head_len, _, cut_start, cut_end = got
    return simple_response_fields(cut_connection(data[:head_len], cut_start, cut_end) if cut_start != cut_end
                                  else data[:head_len], status)  # fmt: skip


def test_simple_response_fields_of_realistic_responses():
    taken = 0
    for path in [r.split(b" ", 2)[1] for r in realistic.requests(300)]:
        data = realistic.response_for(path)
        fields = _simple_fields(data)
        if fields is not None:
            taken += 1
            assert fields == _full_fields(data)
    assert taken > 100  # most of them take the simple path


@given(st.lists(st.tuples(st.sampled_from(_RESP_NAMES), st.sampled_from([b": ", b":", b":\t", b":  "]),
                          st.sampled_from(_RESP_VALUES)), max_size=6),
       st.sampled_from([b"200 OK", b"404 Not Found", b"503", b"201 "]), st.integers(0, 3),
       st.sampled_from([None, b"Connection: keep-alive", b"connection:KEEP-ALIVE "]), st.integers(0, 6))  # fmt: skip
def test_simple_response_fields_match_the_full_parser(lines, status, length, connection, where):
    head = [n + sep + v for n, sep, v in lines]
    head.insert(min(where, len(head)), b"Content-Length: %d" % length)
    if connection is not None:
        head.insert(min(where + 1, len(head)), connection)
    data = b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in head) + b"\r\n" + b"x" * length
    fields = _simple_fields(data)
    if fields is not None:
        assert fields == _full_fields(data)
