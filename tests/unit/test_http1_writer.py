"""Writer tests: exact bytes for examples, and write -> parse round trips (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import (
    END_OF_MESSAGE,
    LAST_CHUNK,
    REASONS,
    Body,
    Framing,
    RequestParser,
    ResponseParser,
    encode_chunk,
    simple_response,
    write_request_head,
    write_response_head,
)


def coalesce(events: list) -> list:
    out: list = []
    for ev in events:
        if out and isinstance(ev, Body) and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def test_write_request_head() -> None:
    assert (
        write_request_head(b"POST", b"/a?b", [(b"host", b"x"), (b"content-length", b"3")])
        == b"POST /a?b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n"
    )
    assert write_request_head(b"GET", b"/", [], version=b"1.0") == b"GET / HTTP/1.0\r\n\r\n"


def test_write_response_head() -> None:
    assert write_response_head(200, [(b"a", b"b")]) == b"HTTP/1.1 200 OK\r\na: b\r\n\r\n"
    assert write_response_head(404, []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert write_response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    assert write_response_head(200, [], reason=b"Fine", version=b"1.0") == b"HTTP/1.0 200 Fine\r\n\r\n"


def test_reasons_table() -> None:
    assert REASONS[200] == b"OK"
    assert REASONS[502] == b"Bad Gateway"
    assert REASONS[431] == b"Request Header Fields Too Large"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x", b"a\r\nInjected: 1")],
        [(b"x", b"a\nb")],
        [(b"x", b"a\rb")],
        [(b"x\r\n", b"a")],
    ],
)
def test_header_injection_is_refused(headers: list) -> None:
    with pytest.raises(ValueError):
        write_response_head(200, headers)
    with pytest.raises(ValueError):
        write_request_head(b"GET", b"/", headers)


def test_target_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        write_request_head(b"GET", b"/ HTTP/1.1\r\nHost: evil\r\n\r\nGET /", [])


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert encode_chunk(b"") == b""
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_simple_response() -> None:
    assert simple_response(503, b"down\n", close=True) == (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 5\r\nconnection: close\r\n\r\ndown\n"
    )
    assert simple_response(200, b"{}", headers=[(b"Content-Type", b"application/json")]) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    )
    assert simple_response(204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert simple_response(200, b"ab", headers=[(b"content-length", b"99")]) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\r\nab"
    )
    with pytest.raises(ValueError):
        simple_response(304, b"body")


def test_simple_response_parses_back() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    events = p.feed(simple_response(429, b"slow down", close=True))
    assert events[0].status == 429
    assert events[0].keep_alive is False
    assert events[1:] == [Body(b"slow down"), END_OF_MESSAGE]


# -- round trips ----------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = {
    b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect",
    b"te", b"trailer", b"keep-alive", b"proxy-connection",
}
names = st.text(TCHAR, min_size=1, max_size=12).map(str.encode).filter(lambda n: n.lower() not in RESERVED)
values = st.from_regex(rb"\A([\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]{0,20}[\x21-\x7e\x80-\xff])?)?\Z")
header_lists = st.lists(st.tuples(names, values), max_size=6)
targets = st.from_regex(rb"\A/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,30}(\?[A-Za-z0-9=&/?-]{0,15})?\Z")
bodies = st.binary(max_size=300)


def split_body(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"]),
    target=targets,
    extra=header_lists,
    body=bodies,
    chunked=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_request_round_trip(method, target, extra, body, chunked, cuts) -> None:
    headers = [(b"host", b"backend.local:8080"), *extra]
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
        wire = write_request_head(method, target, headers)
        wire += b"".join(encode_chunk(c) for c in split_body(body, cuts)) + LAST_CHUNK
    else:
        headers.append((b"content-length", b"%d" % len(body)))
        wire = write_request_head(method, target, headers) + body
    p = RequestParser()
    events = coalesce(p.feed(wire))
    h = events[0]
    assert (h.method, h.target, h.version, h.host) == (method, target, b"1.1", b"backend.local:8080")
    assert h.headers == [(n.lower(), v) for n, v in headers]
    assert h.framing == (Framing.CHUNKED if chunked else Framing.LENGTH)
    assert h.content_length == (None if chunked else len(body))
    assert events[1:] == ([Body(body)] if body else []) + [END_OF_MESSAGE]


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 201, 202, 203, 206, 301, 302, 400, 404, 418, 500, 503, 599]),
    extra=header_lists,
    body=bodies,
    chunked=st.booleans(),
    reason=st.one_of(st.none(), st.from_regex(rb"\A[\x20-\x7e]{0,20}\Z")),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_response_round_trip(status, extra, body, chunked, reason, cuts) -> None:
    headers = list(extra)
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
        wire = write_response_head(status, headers, reason=reason)
        wire += b"".join(encode_chunk(c) for c in split_body(body, cuts)) + LAST_CHUNK
    else:
        headers.append((b"content-length", b"%d" % len(body)))
        wire = write_response_head(status, headers, reason=reason) + body
    p = ResponseParser()
    p.expect(b"GET")
    events = coalesce(p.feed(wire))
    h = events[0]
    expected_reason = reason if reason is not None else REASONS.get(status, b"")
    assert (h.status, h.version, h.keep_alive) == (status, b"1.1", True)
    assert h.reason == expected_reason
    assert h.headers == [(n.lower(), v) for n, v in headers]
    assert h.framing == (Framing.CHUNKED if chunked else Framing.LENGTH)
    assert events[1:] == ([Body(body)] if body else []) + [END_OF_MESSAGE]
    assert p.feed_eof() == []
