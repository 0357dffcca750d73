"""Hypothesis properties for the parsers.

* chunk invariance: a generated stream of requests (responses) parsed whole, one byte at a time
  and split at random points gives the same coalesced events, equal to the events the generator
  predicted independently while building the bytes;
* garbage: arbitrary bytes and mutated valid streams, in random splits, give events or
  ProtocolError and nothing else.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.http1 import (
    END_OF_MESSAGE,
    Body,
    Framing,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    events,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = {
    b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect",
    b"te", b"trailer", b"keep-alive", b"proxy-connection",
}
names = st.text(TCHAR, min_size=1, max_size=10).map(str.encode).filter(lambda n: n.lower() not in RESERVED)
values = st.from_regex(rb"\A([\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]{0,16}[\x21-\x7e\x80-\xff])?)?\Z")
ows = st.sampled_from([b"", b" ", b"\t", b"  \t"])
targets = st.from_regex(rb"\A/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,20}(\?[A-Za-z0-9=&-]{0,10})?\Z")
hosts = st.from_regex(rb"\A[a-z0-9][a-z0-9.-]{0,15}(:[0-9]{1,5})?\Z")
# llhttp (strict) refuses BWS around ";" in requests; the response parser accepts it (RFC 9112
# 7.1.1 chunk-ext allows BWS and RFC 9110 5.6.3 says recipients parse it).
chunk_exts = st.sampled_from([b"", b";a", b";a=b", b';n="v \\" x"'])
chunk_exts_bws = st.sampled_from([b"", b";a", b";a=b", b';n="v \\" x"', b" ; x = y"])


def coalesce(events: list) -> list:
    out: list = []
    for ev in events:
        if out and isinstance(ev, Body) and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


@st.composite
def field_lines(draw) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Wire bytes of some extra header lines, and the parsed form a parser must produce."""
    wire, parsed = b"", []
    for name, value in draw(st.lists(st.tuples(names, values), max_size=4)):
        wire += name + b":" + draw(ows) + value + draw(ows) + b"\r\n"
        parsed.append((name.lower(), value))
    return wire, parsed


@st.composite
def chunked_body(draw, body: bytes, exts=chunk_exts) -> bytes:
    """Chunked encoding of `body` in random chunk sizes, with extensions, maybe trailers."""
    out = b""
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, len(body) - pos))
        size_txt = b"%x" % size
        if draw(st.booleans()):
            size_txt = size_txt.upper()
        out += b"0" * draw(st.integers(0, 2)) + size_txt + draw(exts) + b"\r\n"
        out += body[pos : pos + size] + b"\r\n"
        pos += size
    out += b"0" + draw(exts) + b"\r\n"
    if draw(st.booleans()):
        out += b"X-Trailer: t\r\n"
    return out + b"\r\n"


# Legal framing llhttp refuses and the parser accepts again rewritten (proxy/http1/_lenient.py):
# the same events as the plain form.
CL_FORMS = [b"Content-Length: %d\r\n", b"Content-Length: %d\r\nContent-Length: %d\r\n", b"Content-Length: %d, %d\r\n"]
TE_FORMS = [b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\t\r\n", b"Transfer-Encoding: chunked \t\r\n"]


@st.composite
def request(draw, last: bool, lenient: bool = False) -> tuple[bytes, list]:
    """`lenient`: the framing may take a form only the rewriting path accepts (never after a
    chunked request on the connection: see _lenient.py for that one case)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    target = draw(targets)
    host = draw(hosts)
    http10 = draw(st.booleans()) and draw(st.booleans())
    close = last and draw(st.booleans())
    extra_wire, extra = draw(field_lines())
    kind = draw(st.sampled_from(["none", "length", "chunked"] if not http10 else ["none", "length"]))
    body = draw(st.binary(max_size=120)) if kind != "none" else b""

    wire = method + b" " + target + b" HTTP/" + (b"1.0" if http10 else b"1.1") + b"\r\n"
    host_name = draw(st.sampled_from([b"Host", b"host", b"HOST"]))
    wire += host_name + b": " + host + b"\r\n" + extra_wire
    headers = [(b"host", host), *extra]
    if kind == "length":
        form = draw(st.sampled_from(CL_FORMS)) if lenient else CL_FORMS[0]
        wire += form.replace(b"%d", b"%d" % len(body))
        headers.append((b"content-length", b"%d" % len(body)))
    elif kind == "chunked":
        wire += draw(st.sampled_from(TE_FORMS)) if lenient else TE_FORMS[0]
        headers.append((b"transfer-encoding", b"chunked"))
    if close:
        wire += b"Connection: close\r\n"
        headers.append((b"connection", b"close"))
    elif http10:
        wire += b"Connection: keep-alive\r\n"
        headers.append((b"connection", b"keep-alive"))
    wire += b"\r\n"
    if kind == "chunked":
        wire += draw(chunked_body(body))
    else:
        wire += body
    expected = [
        RequestHead(
            method=method,
            target=target,
            version=b"1.0" if http10 else b"1.1",
            headers=headers,
            keep_alive=not close,
            framing={"none": Framing.NONE, "length": Framing.LENGTH, "chunked": Framing.CHUNKED}[kind],
            content_length=len(body) if kind == "length" else None,
            upgrade=False,
            expect_continue=False,
            host=host,
        )
    ]
    if body:
        expected.append(Body(body))
    expected.append(END_OF_MESSAGE)
    return wire, expected


@st.composite
def request_stream(draw, keep_alive: bool = False) -> tuple[bytes, list]:
    n = draw(st.integers(1, 4))
    wire, expected = b"", []
    chunked_before = False
    for i in range(n):
        w, e = draw(request(last=i == n - 1 and not keep_alive, lenient=not chunked_before))
        chunked_before |= e[0].framing == Framing.CHUNKED
        wire += w
        expected += e
    return wire, expected


# Bytes that end a connection's requests with an error (at the latest at end of input).
GARBAGE = [b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01", b"GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n",
           b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", b"GET / HTTP/1.1\r\n",
           b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"]


REASON = {100: b"Continue", 103: b"Early Hints", 200: b"OK", 204: b"No Content", 304: b"Not Modified", 404: b"Not Found", 500: b"Oops"}


@st.composite
def response(draw, last: bool) -> tuple[bytes, bytes, list, bool]:
    """(method, wire, expected events, needs_eof)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD"]))
    wire, expected = b"", []
    for status in draw(st.lists(st.sampled_from([100, 103]), max_size=2)):
        wire += b"HTTP/1.1 %d %s\r\n\r\n" % (status, REASON[status])
        expected.append(ResponseHead(status, REASON[status], b"1.1", []))
    status = draw(st.sampled_from([200, 204, 304, 404, 500]))
    extra_wire, extra = draw(field_lines())
    kinds = ["length", "chunked"] + (["close"] if last else [])
    kind = draw(st.sampled_from(kinds))
    no_body = method == b"HEAD" or status in (204, 304)
    body = b"" if no_body else draw(st.binary(max_size=120))
    headers = list(extra)
    wire += b"HTTP/1.1 %d %s\r\n" % (status, REASON[status]) + extra_wire
    content_length = None
    if kind == "length":
        n = len(body) if not no_body else draw(st.integers(0, 50))
        wire += b"Content-Length: %d\r\n" % n
        headers.append((b"content-length", b"%d" % n))
        content_length = n
    elif kind == "chunked":
        wire += b"Transfer-Encoding: chunked\r\n"
        headers.append((b"transfer-encoding", b"chunked"))
    wire += b"\r\n"
    if no_body:
        framing = Framing.NONE
    else:
        framing = {"length": Framing.LENGTH, "chunked": Framing.CHUNKED, "close": Framing.UNTIL_CLOSE}[kind]
        wire += draw(chunked_body(body, chunk_exts_bws)) if kind == "chunked" else body
    keep_alive = framing != Framing.UNTIL_CLOSE
    expected.append(ResponseHead(status, REASON[status], b"1.1", headers, keep_alive, framing, content_length))
    if body:
        expected.append(Body(body))
    expected.append(END_OF_MESSAGE)
    return method, wire, expected, framing == Framing.UNTIL_CLOSE


@st.composite
def response_stream(draw) -> tuple[list[bytes], bytes, list]:
    n = draw(st.integers(1, 4))
    methods, wire, expected = [], b"", []
    for i in range(n):
        m, w, e, _ = draw(response(last=i == n - 1))
        methods.append(m)
        wire += w
        expected += e
    return methods, wire, expected


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def run_requests(chunks: list[bytes]) -> list:
    p = RequestParser()
    events: list = []
    for c in chunks:
        events += p.feed(c)
    events += p.feed_eof()
    return coalesce(events)


def run_responses(methods: list[bytes], chunks: list[bytes]) -> list:
    p = ResponseParser()
    for m in methods:
        p.expect(m)
    events: list = []
    for c in chunks:
        events += p.feed(c)
    events += p.feed_eof()
    return coalesce(events)


@SETTINGS
@given(request_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_requests_chunk_invariance(stream, cuts) -> None:
    wire, expected = stream
    assert run_requests([wire]) == expected
    assert run_requests([wire[i : i + 1] for i in range(len(wire))]) == expected
    assert run_requests(pieces(wire, cuts)) == expected


@SETTINGS
@given(request_stream(keep_alive=True), st.sampled_from(GARBAGE), st.lists(st.integers(0, 10_000), max_size=8))
def test_valid_requests_then_garbage_any_split_give_the_valid_ones_first(stream, garbage, cuts) -> None:
    # Pipelining (issue 13): whichever feed the bad bytes arrive in, every request before them
    # comes out whole, in order, before the error; the proxy answers them, then the error.
    wire, expected = stream
    for chunks in ([wire + garbage], pieces(wire + garbage, cuts)):
        p = RequestParser()
        events: list = []
        with pytest.raises(ProtocolError) as info:
            for c in chunks:
                events += p.feed(c)
            p.feed_eof()
        assert 400 <= info.value.status_hint <= 505
        assert coalesce(events + info.value.events) == expected


@SETTINGS
@given(response_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_responses_chunk_invariance(stream, cuts) -> None:
    methods, wire, expected = stream
    assert run_responses(methods, [wire]) == expected
    assert run_responses(methods, [wire[i : i + 1] for i in range(len(wire))]) == expected
    assert run_responses(methods, pieces(wire, cuts)) == expected


def _is_event(ev: object) -> bool:
    """One of the event classes proxy/http1/events.py exports (RequestHead is defined in _head.py)."""
    return getattr(events, type(ev).__name__, None) is type(ev) and type(ev).__name__ in events.__all__


def feed_garbage_requests(chunks: list[bytes]) -> None:
    p = RequestParser()
    try:
        for c in chunks:
            for ev in p.feed(c):
                assert _is_event(ev)
        p.feed_eof()
    except ProtocolError as exc:
        assert 400 <= exc.status_hint <= 505


def feed_garbage_responses(chunks: list[bytes]) -> None:
    p = ResponseParser()
    for m in (b"GET", b"HEAD", b"POST", b"GET"):
        p.expect(m)
    try:
        for c in chunks:
            for ev in p.feed(c):
                assert _is_event(ev)
        p.feed_eof()
    except ProtocolError as exc:
        assert exc.status_hint == 502


@st.composite
def mutated(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.sampled_from([0, 9, 10, 13, 32, 44, 48, 58, 59, 127, 255, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b",", b"0", b":", b"\x00"]))
        elif op == "delete" and data:
            del data[i]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 20))]
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=8))
def test_garbage_requests(data, cuts) -> None:
    feed_garbage_requests(pieces(data, cuts))
    feed_garbage_requests([b"GET / HTTP/1.1\r\nHost: a\r\n" + data])


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=8))
def test_garbage_responses(data, cuts) -> None:
    feed_garbage_responses(pieces(data, cuts))
    feed_garbage_responses([b"HTTP/1.1 200 OK\r\n" + data])


@SETTINGS
@given(st.data(), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_requests(data, cuts) -> None:
    wire, _ = data.draw(request_stream())
    bad = data.draw(mutated(wire))
    feed_garbage_requests(pieces(bad, cuts))
    feed_garbage_requests([bad[i : i + 1] for i in range(len(bad))])


@SETTINGS
@given(st.data(), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_responses(data, cuts) -> None:
    methods, wire, _ = data.draw(response_stream())
    bad = data.draw(mutated(wire))
    feed_garbage_responses(pieces(bad, cuts))
    feed_garbage_responses([bad[i : i + 1] for i in range(len(bad))])
