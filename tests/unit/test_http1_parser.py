"""Example-based tests for RequestParser, ResponseParser and the header helpers.

Expected values are written out by hand from the RFC text, never produced by the code under test.
"""

from __future__ import annotations

import pytest

from proxy.http1 import (
    END_OF_MESSAGE,
    HOP_BY_HOP,
    Body,
    EndOfMessage,
    Framing,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Tunnel,
    connection_tokens,
    get_header,
    strip_hop_by_hop,
)


def coalesce(events: list) -> list:
    """Merge adjacent Body (and Tunnel) events: their split points carry no meaning."""
    out: list = []
    for ev in events:
        if out and type(ev) in (Body, Tunnel) and type(out[-1]) is type(ev):
            out[-1] = type(ev)(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def head(**kw) -> RequestHead:
    base = dict(method=b"GET", target=b"/", version=b"1.1", headers=[(b"host", b"a")], host=b"a")
    base.update(kw)
    return RequestHead(**base)


# -- RequestParser --------------------------------------------------------------------------


def test_simple_get() -> None:
    p = RequestParser()
    events = p.feed(b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
    assert events == [
        RequestHead(
            method=b"GET",
            target=b"/path?q=1",
            version=b"1.1",
            headers=[(b"host", b"example.com"), (b"accept", b"*/*")],
            keep_alive=True,
            framing=Framing.NONE,
            content_length=None,
            upgrade=False,
            expect_continue=False,
            host=b"example.com",
        ),
        END_OF_MESSAGE,
    ]
    assert not p.in_message
    assert p.feed_eof() == []


def test_header_names_lowercased_values_stripped_order_and_duplicates_kept() -> None:
    p = RequestParser()
    events = p.feed(
        b"GET / HTTP/1.1\r\nHOST: a\r\nX-Dup:  one \t\r\nx-dup:two\r\nX-Empty:   \r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\n\r\n"
    )
    assert events[0].headers == [
        (b"host", b"a"),
        (b"x-dup", b"one"),
        (b"x-dup", b"two"),
        (b"x-empty", b""),
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
    ]


def test_obs_text_and_inner_whitespace_allowed_in_values() -> None:
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9 \t au lait\r\n\r\n")
    assert events[0].headers[1] == (b"x", b"caf\xe9 \t au lait")


@pytest.mark.parametrize(
    "version,connection,expected",
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Close", False),
        (b"1.1", b"keep-alive", True),
        (b"1.1", b"foo, CLOSE", False),
        (b"1.1", b"x-custom", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"foo ,  keep-alive", True),
        (b"1.0", b"keep-alive, close", False),
    ],
)
def test_request_keep_alive(version: bytes, connection: bytes | None, expected: bool) -> None:
    conn = b"Connection: " + connection + b"\r\n" if connection is not None else b""
    p = RequestParser()
    events = p.feed(b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + conn + b"\r\n")
    assert events[0].keep_alive is expected


@pytest.mark.parametrize(
    "version,expect,expected",
    [
        (b"1.1", b"100-continue", True),
        (b"1.1", b"100-Continue", True),
        (b"1.1", None, False),
        (b"1.1", b"something-else", False),
        (b"1.0", b"100-continue", False),  # RFC 9110 10.1.1: ignored in HTTP/1.0
    ],
)
def test_expect_continue(version: bytes, expect: bytes | None, expected: bool) -> None:
    line = b"Expect: " + expect + b"\r\n" if expect is not None else b""
    p = RequestParser()
    events = p.feed(
        b"POST / HTTP/" + version + b"\r\nHost: a\r\n" + line + b"Content-Length: 2\r\n\r\n"
    )
    assert events[0].expect_continue is expected
    assert p.in_message
    assert p.feed(b"hi") == [Body(b"hi"), END_OF_MESSAGE]


def test_http10_without_host_is_fine() -> None:
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert events == [
        RequestHead(b"GET", b"/", b"1.0", [], keep_alive=False, host=None),
        END_OF_MESSAGE,
    ]


def test_content_length_body() -> None:
    p = RequestParser()
    events = p.feed(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
    assert events == [
        RequestHead(
            b"PUT",
            b"/x",
            b"1.1",
            [(b"host", b"a"), (b"content-length", b"5")],
            framing=Framing.LENGTH,
            content_length=5,
            host=b"a",
        ),
        Body(b"hel"),
    ]
    assert p.in_message
    assert p.feed(b"lo") == [Body(b"lo"), END_OF_MESSAGE]
    assert not p.in_message


def test_content_length_zero() -> None:
    p = RequestParser()
    events = p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert events[0].framing == Framing.LENGTH
    assert events[0].content_length == 0
    assert events[1:] == [END_OF_MESSAGE]


def test_chunked_body_with_extensions_and_trailers() -> None:
    p = RequestParser()
    events = p.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;name=value;q=\"quoted \\\" str\"\r\nhello\r\n"
        b"1\r\n \r\n"
        b"000005\r\nworld\r\n"
        b"0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
    )
    assert events[0].framing == Framing.CHUNKED
    assert events[0].content_length is None
    assert coalesce(events[1:]) == [Body(b"hello world"), END_OF_MESSAGE]


def test_leading_empty_lines_are_ignored() -> None:
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
    p = RequestParser()
    assert p.feed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == [head(), END_OF_MESSAGE]


def test_absolute_form_is_normalised_and_overrides_host() -> None:
    p = RequestParser()
    events = p.feed(
        b"GET http://Example.com:8080/x/y?z=1 HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n"
    )
    assert events[0] == RequestHead(
        b"GET",
        b"/x/y?z=1",
        b"1.1",
        [(b"host", b"Example.com:8080"), (b"x", b"1")],
        host=b"Example.com:8080",
    )


@pytest.mark.parametrize(
    "target,expected",
    [
        (b"http://h", b"/"),
        (b"https://h?q", b"/?q"),
        (b"HTTP://h/", b"/"),
    ],
)
def test_absolute_form_empty_path(target: bytes, expected: bytes) -> None:
    p = RequestParser()
    events = p.feed(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert events[0].target == expected
    assert events[0].host == b"h"


def test_options_asterisk() -> None:
    p = RequestParser()
    events = p.feed(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert events[0].target == b"*"
    assert events[0].method == b"OPTIONS"


def test_upgrade_then_tunnel() -> None:
    p = RequestParser()
    wire = (
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\n\x81\x05hello\nGET / HTTP/1.1\r\n"
    )
    events = p.feed(wire)
    assert events[0].upgrade is True
    assert events[1:] == [END_OF_MESSAGE, Tunnel(b"\x81\x05hello\nGET / HTTP/1.1\r\n")]
    assert p.feed(b"more") == [Tunnel(b"more")]
    assert p.feed(b"") == []
    assert not p.in_message
    assert p.feed_eof() == []


def test_upgrade_header_without_connection_token_is_not_an_upgrade() -> None:
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage, RequestHead, EndOfMessage]
    assert events[0].upgrade is False


def test_after_connection_close_further_bytes_are_discarded() -> None:
    # RFC 9112 9.6: the server MUST NOT process further requests on that connection.
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]
    assert p.feed(b"Host: a\r\n\r\n") == []
    assert p.feed_eof() == []


def test_feed_eof_mid_request_raises() -> None:
    p = RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(ProtocolError, match="mid-request") as info:
        p.feed_eof()
    assert info.value.status_hint == 400


def test_feed_eof_mid_head_raises() -> None:
    p = RequestParser()
    p.feed(b"GE")
    assert p.in_message
    with pytest.raises(ProtocolError):
        p.feed_eof()


def test_in_message_tracks_partial_requests() -> None:
    p = RequestParser()
    assert not p.in_message
    p.feed(b"GET / HTTP/1.1\r\n")
    assert p.in_message
    p.feed(b"Host: a\r\n\r\n")
    assert not p.in_message


PIPELINE = (
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nGET /x HTTP"
    b"PUT /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nGET \r\n3;e=1\r\n/c \r\n0\r\nT: 1\r\n\r\n"
    b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
    b"DELETE /d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n\r\n"
)
PIPELINE_EVENTS = [
    RequestHead(
        b"POST",
        b"/a",
        b"1.1",
        [(b"host", b"a"), (b"content-length", b"11")],
        framing=Framing.LENGTH,
        content_length=11,
        host=b"a",
    ),
    Body(b"GET /x HTTP"),
    END_OF_MESSAGE,
    RequestHead(
        b"PUT",
        b"/b",
        b"1.1",
        [(b"host", b"a"), (b"transfer-encoding", b"chunked")],
        framing=Framing.CHUNKED,
        host=b"a",
    ),
    Body(b"GET /c "),
    END_OF_MESSAGE,
    head(target=b"/c"),
    END_OF_MESSAGE,
    RequestHead(
        b"DELETE",
        b"/d",
        b"1.1",
        [(b"host", b"a"), (b"content-length", b"2")],
        framing=Framing.LENGTH,
        content_length=2,
        host=b"a",
    ),
    Body(b"\r\n"),
    END_OF_MESSAGE,
]


def test_pipeline_whole() -> None:
    assert coalesce(RequestParser().feed(PIPELINE)) == PIPELINE_EVENTS


@pytest.mark.parametrize("cut", range(len(PIPELINE) + 1))
def test_pipeline_every_split_point(cut: int) -> None:
    p = RequestParser()
    events = p.feed(PIPELINE[:cut]) + p.feed(PIPELINE[cut:])
    assert coalesce(events) == PIPELINE_EVENTS
    assert p.feed_eof() == []


def test_pipeline_byte_at_a_time() -> None:
    p = RequestParser()
    events: list = []
    for i in range(len(PIPELINE)):
        events += p.feed(PIPELINE[i : i + 1])
    assert coalesce(events) == PIPELINE_EVENTS


def test_feed_accepts_bytearray_and_memoryview() -> None:
    p = RequestParser()
    wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert p.feed(bytearray(wire)) == [head(), END_OF_MESSAGE]
    assert p.feed(memoryview(wire)) == [head(), END_OF_MESSAGE]


def test_head_limit_is_configurable() -> None:
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 200 + b"\r\n\r\n"
    assert RequestParser(max_header_bytes=1000).feed(wire)[1] == END_OF_MESSAGE
    with pytest.raises(ProtocolError) as info:
        RequestParser(max_header_bytes=100).feed(wire)
    assert info.value.status_hint == 431


# -- ResponseParser -------------------------------------------------------------------------


def rhead(**kw) -> ResponseHead:
    base = dict(status=200, reason=b"OK", version=b"1.1", headers=[])
    base.update(kw)
    return ResponseHead(**base)


def parse_response(method: bytes, wire: bytes, eof: bool = False) -> list:
    p = ResponseParser()
    p.expect(method)
    events = p.feed(wire)
    if eof:
        events += p.feed_eof()
    return coalesce(events)


def test_response_content_length() -> None:
    assert parse_response(b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A:  b \r\n\r\nabc") == [
        rhead(
            headers=[(b"content-length", b"3"), (b"x-a", b"b")],
            framing=Framing.LENGTH,
            content_length=3,
        ),
        Body(b"abc"),
        END_OF_MESSAGE,
    ]


def test_response_chunked_with_extensions_and_trailers() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;a=b ; c = \"x;y\"\r\nabc\r\nA\r\n0123456789\r\n0;end\r\nGrpc-Status: 0\r\n\r\n"
    )
    assert parse_response(b"GET", wire) == [
        rhead(headers=[(b"transfer-encoding", b"chunked")], framing=Framing.CHUNKED),
        Body(b"abc0123456789"),
        END_OF_MESSAGE,
    ]


@pytest.mark.parametrize(
    "method,status,reason",
    [(b"HEAD", 200, b"OK"), (b"GET", 204, b"No Content"), (b"GET", 304, b"Not Modified")],
)
def test_response_without_body_despite_headers(method: bytes, status: int, reason: bytes) -> None:
    wire = b"HTTP/1.1 %d %s\r\nContent-Length: 42\r\n\r\n" % (status, reason)
    p = ResponseParser()
    p.expect(method)
    p.expect(b"GET")
    events = p.feed(wire + b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert events == [
        rhead(
            status=status,
            reason=reason,
            headers=[(b"content-length", b"42")],
            framing=Framing.NONE,
            content_length=42,
        ),
        END_OF_MESSAGE,
        rhead(headers=[(b"content-length", b"1")], framing=Framing.LENGTH, content_length=1),
        Body(b"x"),
        END_OF_MESSAGE,
    ]


def test_head_response_with_chunked_header_has_no_body() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert parse_response(b"HEAD", wire) == [
        rhead(headers=[(b"transfer-encoding", b"chunked")], framing=Framing.NONE),
        END_OF_MESSAGE,
    ]


def test_interim_responses_then_final() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    p = ResponseParser()
    p.expect(b"POST")
    events = p.feed(wire[:30])
    assert events == [rhead(status=100, reason=b"Continue")]
    assert p.in_message  # the final response is still owed
    events = p.feed(wire[30:])
    assert events == [
        rhead(status=103, reason=b"Early Hints", headers=[(b"link", b"</s.css>; rel=preload")]),
        rhead(
            status=201,
            reason=b"Created",
            headers=[(b"content-length", b"0")],
            framing=Framing.LENGTH,
            content_length=0,
        ),
        END_OF_MESSAGE,
    ]
    assert not p.in_message


def test_eof_after_interim_only_is_an_error() -> None:
    p = ResponseParser()
    p.expect(b"POST")
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    with pytest.raises(ProtocolError):
        p.feed_eof()


def test_switching_protocols_then_tunnel() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    events = p.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    assert events == [
        rhead(
            status=101,
            reason=b"Switching Protocols",
            headers=[(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
            upgrade=True,
        ),
        Tunnel(b"\x81\x02hi"),
    ]
    assert p.feed(b"HTTP/1.1 200 OK\r\n") == [Tunnel(b"HTTP/1.1 200 OK\r\n")]
    assert p.feed_eof() == []


def test_until_close_body() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    events = p.feed(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nsome")
    events += p.feed(b" bytes")
    assert p.in_message
    events += p.feed_eof()
    assert coalesce(events) == [
        rhead(
            version=b"1.0",
            headers=[(b"server", b"old")],
            keep_alive=False,
            framing=Framing.UNTIL_CLOSE,
        ),
        Body(b"some bytes"),
        END_OF_MESSAGE,
    ]
    assert p.feed_eof() == []


def test_te_and_cl_chunked_wins_and_closes() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    assert parse_response(b"GET", wire) == [
        rhead(
            headers=[(b"content-length", b"100"), (b"transfer-encoding", b"chunked")],
            keep_alive=False,
            framing=Framing.CHUNKED,
            content_length=None,
        ),
        Body(b"ok"),
        END_OF_MESSAGE,
    ]


def test_identical_duplicate_content_length_collapsed() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"
    events = parse_response(b"GET", wire)
    assert events[0].content_length == 2
    assert events[1:] == [Body(b"ok"), END_OF_MESSAGE]


@pytest.mark.parametrize(
    "version,connection,expected",
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, CLOSE", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
    ],
)
def test_response_keep_alive(version: bytes, connection: bytes | None, expected: bool) -> None:
    conn = b"Connection: " + connection + b"\r\n" if connection is not None else b""
    events = parse_response(b"GET", b"HTTP/" + version + b" 200 OK\r\n" + conn + b"Content-Length: 0\r\n\r\n")
    assert events[0].keep_alive is expected


def test_status_line_without_reason() -> None:
    for line in (b"HTTP/1.1 204\r\n\r\n", b"HTTP/1.1 204 \r\n\r\n"):
        assert parse_response(b"GET", line) == [
            rhead(status=204, reason=b"", framing=Framing.NONE),
            END_OF_MESSAGE,
        ]


def test_bytes_after_closing_response_are_an_error() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ProtocolError) as info:
        p.feed(b"H")
    assert info.value.status_hint == 502


BAD_RESPONSES = [
    ("dup_cl_differ", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
    ("cl_list_differ", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc"),
    ("cl_negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
    ("cl_plus", b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"),
    ("cl_overflow", b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999999\r\n\r\n"),
    ("te_gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    ("te_chunked_twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("chunk_nonhex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nabc\r\n0\r\n\r\n"),
    ("chunk_negative", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n"),
    ("chunk_17_digits", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n"),
    ("chunk_no_crlf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naX0\r\n\r\n"),
    ("chunk_bare_lf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n"),
    ("chunk_ext_ctl", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\na\r\n0\r\n\r\n"),
    ("chunk_size_space", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\na\r\n0\r\n\r\n"),
    ("trailer_obs_fold", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n"),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("space_before_colon", b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n"),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n"),
    ("bare_cr", b"HTTP/1.1 200 OK\r\nX: a\rY: b\r\nContent-Length: 0\r\n\r\n"),
    ("http2", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("status_2_digits", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
    ("status_099", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"),
    ("not_http", b"<html>hello</html>\r\n\r\n"),
    ("lowercase_http", b"http/1.1 200 OK\r\n\r\n"),
]


@pytest.mark.parametrize("wire", [c[1] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES])
def test_bad_response_is_502(wire: bytes) -> None:
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        p = ResponseParser()
        p.expect(b"GET")
        with pytest.raises(ProtocolError) as info:
            for piece in pieces:
                p.feed(piece)
            p.feed_eof()
        assert info.value.status_hint == 502
        with pytest.raises(ProtocolError):
            p.feed(b"HTTP/1.1 200 OK\r\n\r\n")


def test_bytes_with_no_request_outstanding() -> None:
    p = ResponseParser()
    with pytest.raises(ProtocolError) as info:
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status_hint == 502


def test_extra_response_beyond_expected_is_an_error() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError) as info:
        p.feed(one + one)
    assert [type(e) for e in info.value.events] == [ResponseHead, EndOfMessage]


def test_response_eof_mid_body_raises() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(ProtocolError):
        p.feed_eof()


def test_response_eof_at_boundary() -> None:
    p = ResponseParser()
    p.expect(b"GET")
    assert p.feed_eof() == []  # nothing received yet: the caller decides what that means


def test_response_head_too_large() -> None:
    p = ResponseParser(max_header_bytes=200)
    p.expect(b"GET")
    with pytest.raises(ProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300)
    p = ResponseParser(max_header_bytes=200)
    p.expect(b"GET")
    with pytest.raises(ProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300 + b"\r\n\r\n")


RESPONSE_STREAM = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n\r\n"
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\n\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop"
)
RESPONSE_METHODS = [b"GET", b"POST", b"HEAD", b"GET"]
RESPONSE_EVENTS = [
    rhead(headers=[(b"content-length", b"4")], framing=Framing.LENGTH, content_length=4),
    Body(b"\r\n\r\n"),
    END_OF_MESSAGE,
    rhead(status=100, reason=b"Continue"),
    rhead(headers=[(b"transfer-encoding", b"chunked")], framing=Framing.CHUNKED),
    Body(b"\r\nabc"),
    END_OF_MESSAGE,
    rhead(headers=[(b"content-length", b"9")], framing=Framing.NONE, content_length=9),
    END_OF_MESSAGE,
    rhead(
        status=404,
        reason=b"Not Found",
        headers=[(b"content-length", b"3")],
        framing=Framing.LENGTH,
        content_length=3,
    ),
    Body(b"nop"),
    END_OF_MESSAGE,
]


@pytest.mark.parametrize("cut", range(len(RESPONSE_STREAM) + 1))
def test_response_stream_every_split_point(cut: int) -> None:
    p = ResponseParser()
    for m in RESPONSE_METHODS:
        p.expect(m)
    events = p.feed(RESPONSE_STREAM[:cut]) + p.feed(RESPONSE_STREAM[cut:])
    assert coalesce(events) == RESPONSE_EVENTS
    assert not p.in_message
    assert p.feed_eof() == []


# -- header helpers -------------------------------------------------------------------------


def test_hop_by_hop_set() -> None:
    assert HOP_BY_HOP == {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }


def test_proxy_auth_fields_are_end_to_end_unless_named_in_connection() -> None:
    # RFC 9110 11.7: only a proxy that authenticates its clients consumes them; this one does not.
    headers = [(b"host", b"a"), (b"proxy-authorization", b"Basic dTpw"), (b"proxy-authenticate", b"Basic")]
    assert strip_hop_by_hop(headers) == headers
    named = [*headers, (b"connection", b"proxy-authorization")]
    assert strip_hop_by_hop(named) == [(b"host", b"a"), (b"proxy-authenticate", b"Basic")]


def test_strip_hop_by_hop() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Secret , Upgrade"),
        (b"x-secret", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"trailers"),
        (b"x-kept", b"2"),
        (b"connection", b"x-other"),
        (b"x-other", b"3"),
    ]
    assert strip_hop_by_hop(headers) == [(b"host", b"a"), (b"x-kept", b"2")]
    assert strip_hop_by_hop(headers, keep_upgrade=True) == [
        (b"host", b"a"),
        (b"upgrade", b"websocket"),
        (b"x-kept", b"2"),
    ]


def test_connection_token_cannot_strip_host() -> None:
    headers = [(b"host", b"a"), (b"connection", b"close, host, content-length"), (b"content-length", b"3")]
    assert strip_hop_by_hop(headers) == [(b"host", b"a"), (b"content-length", b"3")]


def test_get_header_and_connection_tokens() -> None:
    headers = [(b"a", b"1"), (b"connection", b"Close,, Foo"), (b"a", b"2"), (b"connection", b" bar ")]
    assert get_header(headers, b"a") == b"1"
    assert get_header(headers, b"missing") is None
    assert connection_tokens(headers) == {b"close", b"foo", b"bar"}


def test_http10_chunked_response_closes_connection() -> None:
    # RFC 9112 6.1: HTTP/1.0 + Transfer-Encoding is faulty framing; close after the message.
    wire = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    assert parse_response(b"GET", wire) == [
        rhead(
            version=b"1.0",
            headers=[(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked")],
            keep_alive=False,
            framing=Framing.CHUNKED,
        ),
        Body(b"x"),
        END_OF_MESSAGE,
    ]
