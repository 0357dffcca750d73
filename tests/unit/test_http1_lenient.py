"""RequestParser on legal shapes llhttp refuses (repeated identical Content-Length, whitespace after
``chunked``: proxy/http1/_lenient.py) and on pipelined requests followed by garbage.

Every property is checked under any split of the bytes into feeds: the parser must not answer
differently because of where TCP cut the stream. Expected values are written out here, as what
the client meant (method, target, body), never computed by the parser.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.http1 import Body, EndOfMessage, ProtocolError, RequestHead, RequestParser

H = b"Host: example.com\r\n"

# (wire bytes, what the client meant). All keep the connection alive.
VALID = [
    (b"GET /g HTTP/1.1\r\n" + H + b"\r\n", (b"GET", b"/g", b"")),
    (b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello", (b"POST", b"/cl", b"hello")),
    (b"POST /ch HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
     (b"POST", b"/ch", b"abcde")),
    # RFC 9110 8.6: one decimal value repeated, on two lines or as a list
    (b"POST /dup HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", (b"POST", b"/dup", b"hello")),
    (b"POST /list HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", (b"POST", b"/list", b"hello")),
    (b"PUT /mix HTTP/1.1\r\ncontent-length: 3,3\r\n" + H + b"CONTENT-LENGTH: 3\r\n\r\nabc", (b"PUT", b"/mix", b"abc")),
    (b"POST /zero HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n", (b"POST", b"/zero", b"")),
    # RFC 9112 5: OWS after a field value, here after "chunked"
    (b"POST /tab HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     (b"POST", b"/tab", b"hello")),
    (b"POST /sp HTTP/1.1\r\n" + H + b"Transfer-Encoding:  chunked \t \r\n\r\n2\r\nhi\r\n0\r\n\r\n",
     (b"POST", b"/sp", b"hi")),
]

# Bytes no parser may take as a request; each fails at the latest at end of input.
GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET / HTTP/1.1\r\n" + H + b"X : y\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H,  # cut short
]
LENIENT = {b"/dup", b"/list", b"/mix", b"/zero", b"/tab", b"/sp"}


def _sequences(max_size: int):
    """Requests to pipeline. A lenient one never follows a chunked one: when such a head comes in
    the same feed as the end of a chunked body begun in an earlier feed, where that body ended
    is unknown (llhttp does not say; chunk framing is not the decoded size), so the head cannot
    be parsed again and is refused (400) as before. Documented in _lenient.py."""

    def ok(seq: list) -> bool:
        targets = [m[1] for _, m in seq]
        chunked = [i for i, t in enumerate(targets) if t in (b"/ch", b"/tab", b"/sp")]
        return not chunked or not any(t in LENIENT for t in targets[chunked[0] + 1 :])

    return st.lists(st.sampled_from(VALID), min_size=1, max_size=max_size).filter(ok)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def _meant(events: list) -> list[tuple[bytes, bytes, bytes]]:
    """(method, target, body) of each request the events complete."""
    out, head, body = [], None, b""
    for ev in events:
        if isinstance(ev, RequestHead):
            head, body = ev, b""
        elif isinstance(ev, Body):
            body += ev.data
        elif isinstance(ev, EndOfMessage):
            assert head is not None
            out.append((head.method, head.target, body))
            head = None
    return out


def _feed(pieces: list[bytes]) -> tuple[list, ProtocolError | None]:
    parser = RequestParser()
    events: list = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
        events += parser.feed_eof()
    except ProtocolError as exc:
        return events + exc.events, exc
    return events, None


@pytest.mark.parametrize("wire,meant", VALID, ids=[m[1].decode() for _, m in VALID])
def test_legal_framing_llhttp_refuses_is_accepted_whole_and_byte_at_a_time(wire, meant) -> None:
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        events, err = _feed(pieces)
        assert err is None, err
        assert _meant(events) == [meant]
        (head,) = [ev for ev in events if isinstance(ev, RequestHead)]
        # what a backend is given: one Content-Length with the one value, a plain "chunked"
        cls = [v for n, v in head.headers if n == b"content-length"]
        tes = [v for n, v in head.headers if n == b"transfer-encoding"]
        assert cls in ([], [b"%d" % len(meant[2])]) and tes in ([], [b"chunked"]), head.headers
        assert head.content_length == (len(meant[2]) if cls else None)


@settings(max_examples=400, deadline=None)
@given(_sequences(4), st.lists(st.integers(1, 400), max_size=8))
@example([VALID[0], VALID[3]], [40])
def test_pipelined_requests_under_any_split_are_all_parsed(requests, cuts) -> None:
    wire = b"".join(w for w, _ in requests)
    events, err = _feed(_split(wire, cuts))
    assert err is None, err
    assert _meant(events) == [m for _, m in requests]


@settings(max_examples=600, deadline=None)
@given(
    _sequences(3),
    st.sampled_from(GARBAGE),
    st.lists(st.integers(1, 400), max_size=8),
)
@example([VALID[0]], GARBAGE[0], [])
@example([VALID[1], VALID[4]], GARBAGE[4], [60, 70])
def test_valid_requests_then_garbage_under_any_split_come_first_then_the_error(requests, garbage, cuts) -> None:
    # The proxy answers every request before the bad bytes (in order), then the error: the
    # parser must hand all of them over, whichever feed the error comes in.
    wire = b"".join(w for w, _ in requests) + garbage
    events, err = _feed(_split(wire, cuts))
    assert err is not None and err.status_hint >= 400
    assert _meant(events) == [m for _, m in requests]


@pytest.mark.parametrize(
    "wire",
    [
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
    ],
)
def test_what_stays_refused_under_any_split(wire) -> None:
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))], _split(wire, [len(wire) // 2])):
        events, err = _feed(pieces)
        assert err is not None and err.status_hint == 400, (pieces, events)
        assert not any(isinstance(ev, EndOfMessage) for ev in events)


def test_rewriting_is_bounded_per_feed() -> None:
    # A read packed with such requests costs a bounded amount of work: the first ones are taken,
    # then the refusal stands (in separate reads each would be taken).
    from proxy.http1._lenient import MAX_REWRITES_PER_FEED

    one = b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 0, 0\r\n\r\n"
    events, err = _feed([one * 1000])
    assert err is not None and err.status_hint == 400
    assert len(_meant(events)) == MAX_REWRITES_PER_FEED
    events, err = _feed([one] * 40)
    assert err is None and len(_meant(events)) == 40
