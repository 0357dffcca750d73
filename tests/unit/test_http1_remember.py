"""The parsers remember the last simple message of their connection and their verdict on it
(`feed_simple`): a connection that repeats itself must get exactly what a fresh parser would say,
whatever came before, and a message that differs in any byte that matters must not get the old
verdict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import END_OF_MESSAGE, ProtocolError, RequestParser
from proxy.http1._simple import REMEMBER_MAX
from proxy.http1.parser import ResponseParser

from .test_http1_simple import near_simple_requests, near_simple_responses, requests, responses


# Each example draws a pool of up to 4 messages (the message strategies: most of an example's
# time) and feeds FEEDS of them, repeated or one byte changed, to one parser, picked by a Random
# that hypothesis seeds (a draw per pick cost as much again): 100 examples of 48 feeds make as
# many remembered-or-not comparisons as 400 of 12 did.
FEEDS = 48


def _same_head(got, want) -> bool:
    if got is None or want is None:
        return got is want
    return got.replace(headers=got.fields()) == want.replace(headers=want.fields())


@settings(max_examples=100)
@given(st.lists(st.one_of(requests(), near_simple_requests()), min_size=1, max_size=4), st.randoms(use_true_random=True))
def test_a_remembered_request_gets_what_a_fresh_parser_says(pool, rnd):
    p = RequestParser()
    for _ in range(FEEDS):
        req = rnd.choice(pool)
        if rnd.random() < 0.5:
            # The same size, one byte changed: a near miss must not get the remembered head.
            i = rnd.randrange(len(req))
            req = req[:i] + bytes([rnd.randrange(256)]) + req[i + 1 :]
        assert _same_head(p.feed_simple(req), RequestParser().feed_simple(req)), req


def test_a_repeated_request_gets_the_same_head_and_a_long_one_is_not_kept():
    p = RequestParser()
    req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    first = p.feed_simple(req)
    assert first is not None and p.feed_simple(bytes(req)) is first
    other = p.feed_simple(req.replace(b"/a", b"/b"))
    assert other is not None and other.target == b"/b" and p.feed_simple(req) is not first
    # Between simple ones, a request through the full path leaves the parser as it was.
    assert p.feed(b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")[-1] is END_OF_MESSAGE
    assert p.feed_simple(req).target == b"/a"
    long = b"GET /" + b"x" * REMEMBER_MAX + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    a = RequestParser(max_header_bytes=4 * REMEMBER_MAX)
    assert a.feed_simple(long) is not a.feed_simple(long)


@settings(max_examples=100)
@given(st.lists(st.one_of(responses(), near_simple_responses()), min_size=1, max_size=4), st.randoms(use_true_random=True))
def test_a_remembered_response_gets_what_a_fresh_parser_says(pool, rnd):
    p = ResponseParser()
    for _ in range(FEEDS):
        resp, method = rnd.choice(pool)
        if rnd.random() < 0.5:
            # The same size, one byte changed (head or body): only a change in the head matters.
            i = rnd.randrange(len(resp))
            resp = resp[:i] + bytes([rnd.randrange(256)]) + resp[i + 1 :]
        fresh = ResponseParser()
        fresh.expect(method)
        want = fresh.feed_simple(resp)
        p.expect(method)
        got = p.feed_simple(resp)
        assert got == want, resp
        if got is None:
            # What the balancer does then: the full parser, on the same connection.
            try:
                events = p.feed(resp)
            except ProtocolError:
                p = ResponseParser()
                continue
            if not events or events[-1] is not END_OF_MESSAGE or not events[0].keep_alive:
                p = ResponseParser()  # the connection would not be reused


def test_a_response_with_the_same_head_and_size_but_another_body_is_the_same_verdict():
    p = ResponseParser()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    for body in (b"ok", b"no", b"\r\n"):
        p.expect(b"GET")
        assert p.feed_simple(head + body) == (200, len(head), 2, len(head) - 28, len(head) - 4)
    p.expect(b"GET")
    assert p.feed_simple(head + b"o") is None  # one byte short: not the remembered size
    p = ResponseParser()
    p.expect(b"GET")
    assert p.feed_simple(head + b"ok") is not None
    p.expect(b"HEAD")
    assert p.feed_simple(head + b"ok") is None  # a HEAD response never takes the simple path
