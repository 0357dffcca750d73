"""Differential tests of the compiled upstream response parser (proxy/http1/_response.py, an
extension type when compiled: _response.pxd): hypothesis drives the compiled `ResponseParser` and
its pure-Python twin (`proxy._native.load_pure`) through the same calls (`expect`, `feed_simple`,
`feed` in any pieces, `feed_eof`) and requires the same answers after every call, errors (message,
status hint, the events before them) included: valid response streams, the same mutated, simple
responses with a flaw, and any bytes. Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_http1_fuzz import mutated, pieces, response_stream
from tests.unit.test_http1_simple import near_simple_responses, responses
from tests.unit.test_native_differential import _twins

METHODS = st.lists(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST"]), min_size=0, max_size=4)


def feed_trace(p, chunks: list[bytes], simple: bool) -> list:
    """Every call's answer from an HTTP/1.1 parser (the lb's request or response one), fed as the
    lb feeds it: per piece `feed_simple` first (when `simple`) and `feed` when it declines, then
    EOF; an error ends the list with its type, message, status hint and the events before it."""
    out: list = []
    try:
        for chunk in chunks:
            if simple:
                result = p.feed_simple(chunk)
                out.append(("simple", result, p.in_message))
                if result is not None:
                    continue
            out.append(("feed", p.feed(chunk), p.in_message))
        out.append(("eof", p.feed_eof()))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        out.append(("raised", type(exc).__name__, str(exc), getattr(exc, "status_hint", None),
                    getattr(exc, "events", None)))  # fmt: skip
    return out


def trace(mod, methods: list[bytes], chunks: list[bytes], simple: bool, max_head: int) -> list:
    """As the lb's UpstreamConn drives its parser: one `expect` per request sent, then the pieces."""
    p = mod.ResponseParser(max_header_bytes=max_head)
    for m in methods:
        p.expect(m)
    return feed_trace(p, chunks, simple)


def same(methods, chunks, simple=True, max_head=8192) -> None:
    compiled, pure = _twins("proxy.http1._response")
    assert trace(compiled, methods, chunks, simple, max_head) == trace(pure, methods, chunks, simple, max_head)


CUTS = st.lists(st.integers(0, 10_000), max_size=6)
SIMPLE = st.booleans()
MAX_HEADS = st.sampled_from([8192, 8192, 40, 0])


@settings(max_examples=300, deadline=None)
@given(response_stream(), CUTS, SIMPLE, MAX_HEADS)
def test_response_streams_compiled_is_pure(stream, cuts, simple, max_head):
    methods, wire, _ = stream
    same(methods, pieces(wire, cuts), simple, max_head)
    same(methods, [wire], simple, max_head)


@settings(max_examples=300, deadline=None)
@given(st.data(), CUTS, SIMPLE)
def test_mutated_responses_compiled_is_pure(data, cuts, simple):
    methods, wire, _ = data.draw(response_stream())
    bad = data.draw(mutated(wire))
    same(methods, pieces(bad, cuts), simple)
    same(methods, [bad[i : i + 1] for i in range(min(len(bad), 300))], simple)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(responses().map(lambda c: c[0]), near_simple_responses().map(lambda c: c[0]),
                          st.binary(max_size=120)), min_size=1, max_size=4),
       METHODS, MAX_HEADS)  # fmt: skip
def test_simple_responses_one_per_feed_compiled_is_pure(messages, methods, max_head):
    # One response per feed, as a backend answers keep-alive requests: the remembered verdict too.
    same(methods or [b"GET"] * len(messages), messages, True, max_head)
    same([b"GET"] * (len(messages) * 2), messages + messages, True, max_head)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), CUTS, METHODS, SIMPLE)
def test_any_bytes_compiled_is_pure(data, cuts, methods, simple):
    same(methods, pieces(data, cuts), simple)
    same(methods, [b"HTTP/1.1 200 OK\r\n" + data], simple)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"200 OK", b"404 Not Found", b"500 Oops", b"201 Made"]),
                          st.sampled_from([b"", b"Connection: keep-alive\r\n", b"X-A: b\r\n", b"Date: x\r\n"]),
                          st.binary(min_size=0, max_size=3)), min_size=2, max_size=6),
       st.integers(0, 40))  # fmt: skip
def test_the_memo_answers_by_the_head_alone(parts, pad):
    # Responses of one size whose heads differ (status, a Connection line to cut, another field)
    # and whose bodies differ or not, in a row: a remembered verdict is reused only for the same
    # head (compiled, the whole last response is kept when short and only its head compared).
    size = max(len(body) for _, _, body in parts) + pad
    messages = []
    for status, line, body in parts:
        body = body.ljust(size, b"x")
        messages.append(b"HTTP/1.1 " + status + b"\r\n" + line + b"Content-Length: %d\r\n\r\n" % size + body)
    same([b"GET"] * len(messages), messages, True, 8192)
    # Heads of one size too (the Connection line's place moves): a head compared by its bytes.
    swapped = [m.replace(b"Content-Length: %d\r\nConnection" % size, b"Connection") for m in messages]
    same([b"GET"] * (2 * len(messages)), messages + swapped, True, 8192)
    # Longer than the memo keeps whole: the head is copied as before.
    big = [m.replace(b"\r\n\r\n", b"\r\n\r\n" + b"y" * 5000).replace(b"Length: %d" % size, b"Length: %d" % (size + 5000))
           for m in messages]  # fmt: skip
    same([b"GET"] * len(big), big, True, 8192)


class _Queue(__import__("collections").deque):
    """A deque's subclass: the compiled parser's direct call of deque's C functions (proxy/_deque.pxd)
    takes only an exact deque, this goes the Python call's way."""


def _queue_trace(mod, queue) -> list:
    out: list = []
    p = mod.ResponseParser()
    p._expected = queue
    for call in (lambda: p.expect(b"GET"), lambda: p.feed_simple(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                 lambda: p.expect(b"HEAD"), lambda: list(p._expected)):
        try:
            out.append(("ok", call()))
        except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
            out.append(("raised", type(exc).__name__, str(exc)))
    return out


def test_the_queue_of_methods_of_any_type_compiled_is_pure():
    # `_expected` is a public field: whatever it holds, the compiled `expect` and `feed_simple` call
    # deque's append and popleft with the pure twin's answers and errors (a list: deque's descriptor
    # refuses it; a subclass: the Python call; a tuple: no append).
    compiled, pure = _twins("proxy.http1._response")
    deque = __import__("collections").deque
    for make in (deque, _Queue, list, tuple):
        assert _queue_trace(compiled, make()) == _queue_trace(pure, make()), make
    assert _queue_trace(compiled, deque())[-1] == ("ok", [b"HEAD"])
