"""The parsers' simple paths (`feed_simple`) against their full paths (`feed`): wherever the simple
path answers, the full parser must answer the same; everything unusual must be left to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import END_OF_MESSAGE, Body, Framing, ProtocolError, RequestParser, ResponseHead, strip_hop_by_hop
from proxy.http1._simple import cut_connection
from proxy.http1.parser import ResponseParser

NAMES = [b"Host", b"host", b"User-Agent", b"Accept", b"X-Foo", b"Content-Length", b"Transfer-Encoding",
         b"Connection", b"Upgrade", b"Expect", b"TE", b"Keep-Alive", b"Cookie", b"x-forwarded-for"]  # fmt: skip
VALUES = [b"127.0.0.1:8080", b"example.com", b"a b", b"*/*", b"", b" padded ", b"0", b"5", b"chunked",
          b"close", b"keep-alive", b"100-continue", b"h2c", b"x\ty", b"caf\xc3\xa9", b"a\rb", b"[::1]:80"]  # fmt: skip
TARGETS = [b"/", b"/index.html", b"/a/b?c=d&e=%20", b"/x#frag", b"http://h/", b"*", b"/{bad}", b"/~user:@!$"]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"OPTIONS"]))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        sep = draw(st.sampled_from([b": ", b":", b" : ", b":\t"]))
        lines.append(name + sep + draw(st.sampled_from(VALUES)))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"Host: " + draw(st.sampled_from(VALUES)))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    tail = draw(st.sampled_from([b"", b"", b"abc", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))
    return method + b" " + target + b" " + version + b"\r\n" + b"".join(line + eol for line in lines) + b"\r\n" + tail


HARMLESS = [b"Accept: */*", b"User-Agent: wrk", b"X-Foo:bar", b"X-Sp:  two  words  ", b"Cookie: a=b; c=d",
            b"X-Tab:\tv\t", b"X-Empty:", b"X-Obs: caf\xc3\xa9", b"X-Ctl: a\x01b", b"x-forwarded-for: 1.2.3.4",
            b"Proxy-Authorization: Basic dTpw"]  # fmt: skip


@st.composite
def near_simple_requests(draw: st.DrawFn) -> bytes:
    """Mostly what takes the simple path, each with at most one small change."""
    lines = [b"Host: " + draw(st.sampled_from([b"h", b"127.0.0.1:8080", b"[::1]:80", b"a b", b""]))]
    lines += draw(st.lists(st.sampled_from(HARMLESS), max_size=3))
    lines = draw(st.permutations(lines))
    target = draw(st.sampled_from([b"/", b"/a/b?c=d", b"/%41~!$&'()*+,;=:@", b"/x#y", b"/{"]))
    data = draw(st.sampled_from([b"GET", b"HEAD"])) + b" " + target + b" HTTP/1.1\r\n"
    data += b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"\n", b":", b"\x00", b"#"])) + data[i + 1 :]
    return data


@settings(max_examples=600)
@given(st.one_of(requests(), near_simple_requests()))
def test_a_simple_request_is_whatever_the_full_parser_makes_of_it(data):
    head = RequestParser().feed_simple(data)
    if head is None:
        return
    assert head.raw_fields is not None and data.endswith(head.raw_fields + b"\r\n")
    assert head.headers is None  # parsed only when asked
    assert RequestParser().feed(data) == [head.replace(headers=head.fields(), raw_fields=None), END_OF_MESSAGE]


def test_ordinary_requests_take_the_simple_path_and_unusual_ones_do_not():
    simple = [b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
              b"HEAD /a?b=c HTTP/1.1\r\nhost: h\r\nAccept: */*\r\nUser-Agent: curl/7.88.1\r\n\r\n"]  # fmt: skip
    for data in simple:
        head = RequestParser().feed_simple(data)
        assert head.replace(headers=head.fields(), raw_fields=None) == RequestParser().feed(data)[0]
    full = [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET /#f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text: the full parser decides
    ]
    for data in full:
        assert RequestParser().feed_simple(data) is None, data
    p = RequestParser(max_header_bytes=64)
    assert p.feed_simple(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"x" * 64 + b"\r\n\r\n") is None
    # not between messages: half a request is buffered in the full parser
    p = RequestParser()
    assert p.feed(b"GET / HTTP/1.1\r\nHo") == []
    assert p.feed_simple(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is None


RESPONSE_FIELDS = [b"Server: nginx", b"Content-Type: text/plain", b"Content-Length: 3", b"Content-Length: 4",
                   b"content-length:3", b"Content-Length: 3, 3", b"Transfer-Encoding: chunked",
                   b"Connection: keep-alive", b"Connection: close", b"connection: Keep-Alive", b"Keep-Alive: 5",
                   b"Set-Cookie: a=b", b" folded", b"X : y", b"Date: Sat, 28 Nov 2026 10:00:00 GMT"]  # fmt: skip


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bytes]:
    status = draw(st.sampled_from([b"200 OK", b"404 Not Found", b"503 ", b"204 No Content", b"304 NM",
                                   b"101 Switching", b"100 Continue", b"200", b"099 x"]))  # fmt: skip
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    fields = draw(st.lists(st.sampled_from(RESPONSE_FIELDS), max_size=5))
    body = draw(st.sampled_from([b"", b"ok\n", b"okay", b"ok\nHTTP/1.1 200 OK\r\n\r\n"]))
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))
    return version + b" " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body, method


@st.composite
def near_simple_responses(draw: st.DrawFn) -> tuple[bytes, bytes]:
    body = draw(st.sampled_from([b"", b"ok\n", b"hello world"]))
    fields = [b"Content-Length: %d" % len(body)]
    fields += draw(st.lists(st.sampled_from([b"Server: nginx", b"Connection: keep-alive", b"X-A:  b ",
                                             b"Date: Sat, 28 Nov 2026 10:00:00 GMT", b"Set-Cookie: a=b",
                                             b'Proxy-Authenticate: Basic realm="gw"']),
                            max_size=3))  # fmt: skip
    fields = draw(st.permutations(fields))
    data = b"HTTP/1.1 " + draw(st.sampled_from([b"200 OK", b"404 Not Found", b"500 x", b"201"])) + b"\r\n"
    data += b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"\n", b":", b"\x00", b"9"])) + data[i + 1 :]
    return data, draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))


@settings(max_examples=600)
@given(st.one_of(responses(), near_simple_responses()))
def test_a_simple_response_is_whatever_the_full_parser_makes_of_it(case):
    data, method = case
    simple = ResponseParser()
    simple.expect(method)
    result = simple.feed_simple(data)
    if result is None:
        return
    status, head_len, body_len, cut_start, cut_end = result
    cut = cut_start != cut_end
    full = ResponseParser()
    full.expect(method)
    events = full.feed(data)
    assert isinstance(events[0], ResponseHead) and events[-1] is END_OF_MESSAGE
    rh = events[0]
    assert (rh.status, rh.version, rh.keep_alive, rh.framing, rh.content_length) == (
        status, b"1.1", True, Framing.LENGTH, body_len)  # fmt: skip
    assert b"".join(e.data for e in events if isinstance(e, Body)) == data[head_len:]
    assert cut == any(name == b"connection" for name, _ in rh.headers)
    # What the client gets: the same head without the Connection line, the same body.
    out = cut_connection(data, cut_start, cut_end) if cut else data
    again = ResponseParser()
    again.expect(method)
    events2 = again.feed(out)
    assert events2[0].headers == [(n, v) for n, v in rh.headers if n != b"connection"]
    # Both parsers are ready for the next response on the connection.
    for p in (simple, full):
        p.expect(b"GET")
        assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")[-1] is END_OF_MESSAGE


def test_a_proxy_challenge_from_a_backend_goes_to_the_client_on_both_paths():
    # RFC 9110 11.7.1: Proxy-Authenticate is for the client that chose the proxy asking; this
    # balancer asks nothing, so a backend's challenge is the client's (nginx and HAProxy agree).
    data = b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="gw"\r\nContent-Length: 0\r\n\r\n'
    p = ResponseParser()
    p.expect(b"GET")
    assert p.feed_simple(data) == (407, len(data), 0, 0, 0)  # relayed as it came
    p = ResponseParser()
    p.expect(b"GET")
    head = p.feed(data)[0]
    assert strip_hop_by_hop(head.headers) == [(b"proxy-authenticate", b'Basic realm="gw"'), (b"content-length", b"0")]


def test_the_simple_response_path_refuses_what_needs_the_full_parser():
    def simple(data: bytes, method: bytes = b"GET") -> object:
        p = ResponseParser()
        p.expect(method)
        return p.feed_simple(data)

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert simple(ok) == (200, len(ok) - 2, 2, 0, 0)
    for data in (ok[:-1], ok + b"x", ok.replace(b"1.1", b"1.0"), b"HTTP/1.1 200 OK\r\n\r\nok",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                 b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"):  # fmt: skip
        assert simple(data) is None, data
    assert simple(ok, b"HEAD") is None
    p = ResponseParser()
    assert p.feed_simple(ok) is None  # no request outstanding: the full parser raises
    with pytest.raises(ProtocolError):
        p.feed(ok)


@settings(max_examples=200, deadline=None)  # the first example imports the lb and starts a loop
@given(near_simple_requests())
def test_the_balancer_forwards_a_simple_request_as_it_would_the_parsed_one(data):
    # Frontend.upstream_head from the raw field lines (simple path) and from the parsed head
    # (full path): the same request for the backend, field names' case aside.
    import asyncio

    from proxy.lb.config import LbConfig
    from proxy.lb.frontend import Frontend

    head = RequestParser().feed_simple(data)
    if head is None:
        return
    cfg = LbConfig.model_validate({"pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}}})

    async def both() -> tuple[bytes, bytes]:
        fe = Frontend(cfg, {})
        return fe.upstream_head(head, b"10.0.0.1"), fe.upstream_head(head.replace(headers=head.fields(), raw_fields=None), b"10.0.0.1")

    fast, slow = asyncio.run(both())
    heads = [RequestParser().feed(out)[0] for out in (fast, slow)]
    for h in heads:
        h.headers = [(n, v.split(b"-")[0] if n == b"x-request-id" else v) for n, v in h.headers]
    assert heads[0] == heads[1]
    assert [n for n, _ in heads[0].headers][-4:] == [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                                                     b"x-request-id"]  # fmt: skip


def test_request_head_as_a_dataclass_would_make_it():
    """RequestHead is written out (proxy/http1/_head.py, an extension type when compiled): the
    dataclass's constructor, defaults, equality (`forward` not compared), repr, no hash, and
    `replace`; `simple_head` makes what the constructor makes."""
    from proxy.http1._head import RequestHead, simple_head

    head = RequestHead(b"GET", b"/a", b"1.1", None, True, Framing.NONE, None, False, False, b"h", b"x: 1\r\n", b"x: 1\r\n")
    assert simple_head(b"GET", b"/a", b"h", b"x: 1\r\n", b"x: 1\r\n") == head
    assert head.replace(forward=b"") == head and head.replace(forward=b"").forward == b""
    assert head.replace(target=b"/b") != head and head.replace(target=b"/b").target == b"/b" and head.target == b"/a"
    with pytest.raises(TypeError):
        head.replace(nonsense=1)
    with pytest.raises(TypeError):
        hash(head)
    default = RequestHead(b"GET", b"/", b"1.0")
    assert default.headers == [] and default.headers is not RequestHead(b"GET", b"/", b"1.0").headers
    assert (default.keep_alive, default.framing, default.content_length, default.upgrade, default.expect_continue,
            default.host, default.raw_fields, default.forward) == (True, Framing.NONE, None, False, False, None, None, None)  # fmt: skip
    assert repr(default).startswith("RequestHead(method=b'GET', target=b'/', version=b'1.0', headers=[], keep_alive=True,")
    assert head.fields() == [(b"x", b"1")] and head.headers == [(b"x", b"1")]
    assert (head == 1) is False and head != 1
