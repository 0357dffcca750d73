"""The request fast path on what real clients send: browser, python-requests and OkHttp header sets
with `Connection: keep-alive` (bench/realistic.py), and near misses around that line.

Differential: wherever `feed_simple` takes a request, the full parser must make the same head of
it, and the balancer must send the backend the same request from either (field names' case and
the request id aside). Coverage: the clients' own requests must take the fast path, and every
Connection line other than one plain "keep-alive" (close, upgrade, a second line, listed names)
must not.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.realistic import HEADER_SETS, requests
from proxy.http1 import END_OF_MESSAGE, RequestParser
from proxy.lb.config import LbConfig
from proxy.lb.frontend import Frontend

KEEP_ALIVE = [b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE", b" keep-alive ", b"\tkeep-alive", b"keep-alive\t"]
OTHER_CONNECTION = [b"close", b"Close", b"keep-alive, Upgrade", b"Upgrade", b"keep-alive,close", b"",
                    b"keep-alive, TE", b"keep-alive, x-secret", b"keep-alive,", b"keepalive", b"keep-alive x",
                    b"x-forwarded-for", b"Keep-Alive, Keep-Alive"]  # fmt: skip
EXTRA = [b"Keep-Alive: timeout=5", b"Proxy-Connection: keep-alive", b"TE: trailers", b"Upgrade: websocket",
         b"Content-Length: 0", b"Transfer-Encoding: chunked", b"X-Forwarded-For: 10.9.9.9", b"X-Secret: s",
         b"Expect: 100-continue", b"X-Request-ID: abc", b"Trailer: x"]  # fmt: skip
SEPARATORS = [b": ", b":", b":  ", b":\t", b" : "]


def _lines(k: int) -> list[bytes]:
    return [f"{n}: {v}".encode() for n, v in HEADER_SETS[k][1]]


@st.composite
def browser_requests(draw: st.DrawFn) -> bytes:
    """A client's header set, its Connection line changed or moved or doubled, maybe an extra
    hop-by-hop or special field, maybe another version, path or line end."""
    k = draw(st.integers(0, len(HEADER_SETS) - 1))
    lines = [line for line in _lines(k) if not line.lower().startswith(b"connection:")]
    conn = draw(st.lists(st.sampled_from(KEEP_ALIVE + OTHER_CONNECTION), max_size=2))
    for value in conn:
        name = draw(st.sampled_from([b"Connection", b"connection", b"CONNECTION"]))
        lines.insert(draw(st.integers(0, len(lines))), name + draw(st.sampled_from(SEPARATORS)) + value)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(EXTRA)))
    host = draw(st.sampled_from([b"Host: shop.example", b"host:127.0.0.1:8080", b"Host: [::1]:80", b"Host: a b"]))
    lines.insert(draw(st.integers(0, len(lines))), host)
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST"]))
    target = draw(st.sampled_from([b"/products/7?ref=home", b"/api/v1/items/3?fields=id,name", b"/a#b", b"/{x}"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    return method + b" " + target + b" " + version + b"\r\n" + b"".join(line + eol for line in lines) + b"\r\n"


def _upstream(head) -> bytes:  # noqa: ANN001
    cfg = LbConfig.model_validate({"pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}}})

    async def build() -> bytes:
        return Frontend(cfg, {}).upstream_head(head, b"10.0.0.1")

    return asyncio.run(build())


def _as_backend_sees_it(out: bytes):  # noqa: ANN202
    head = RequestParser().feed(out)[0]
    head.headers = [(n, b"" if n == b"x-request-id" else v) for n, v in head.headers]  # a random prefix
    return head


@settings(max_examples=500, deadline=None)
@given(browser_requests())
def test_whatever_the_fast_path_takes_the_full_path_makes_the_same(data):
    head = RequestParser().feed_simple(data)
    if head is None:
        return
    full = RequestParser().feed(data)
    assert full == [head.replace(headers=head.fields(), raw_fields=None), END_OF_MESSAGE]
    assert full[0].keep_alive
    # What the backend gets: from the raw lines (fast) and from the parsed head (slow).
    fast = _upstream(head)
    slow = _upstream(head.replace(headers=head.fields(), raw_fields=None))
    assert _as_backend_sees_it(fast) == _as_backend_sees_it(slow)
    assert b"connection" not in fast.lower() and b"keep-alive" not in fast.lower()


@settings(max_examples=300, deadline=None)
@given(browser_requests())
def test_only_one_plain_keep_alive_connection_line_takes_the_fast_path(data):
    head = RequestParser().feed_simple(data)
    lines = data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    conn = [ln.partition(b":")[2].strip(b" \t").lower() for ln in lines if ln.lower().startswith(b"connection")]
    if head is not None:
        assert conn in ([], [b"keep-alive"])
        assert not any(ln.lower().startswith((b"keep-alive", b"proxy-connection", b"te:", b"upgrade:"))
                       for ln in lines)  # fmt: skip


def test_every_realistic_client_request_takes_the_fast_path():
    parser = RequestParser()
    for data in requests(60, host="127.0.0.1:8080"):
        head = parser.feed_simple(data)
        assert head is not None, data
        assert head.keep_alive and head.host == b"127.0.0.1:8080"
        assert RequestParser().feed(data)[0] == head.replace(headers=head.fields(), raw_fields=None)
        # The Connection line stays out of what is forwarded; every other line goes as it came.
        assert b"onnection" not in head.forward
        assert head.forward == b"".join(ln + b"\r\n" for ln in data.split(b"\r\n")[1:-2]
                                        if not ln.lower().startswith(b"connection:"))  # fmt: skip


def test_keep_alive_in_any_case_and_ows_before_or_after_host():
    for value in KEEP_ALIVE:
        for data in (b"GET / HTTP/1.1\r\nConnection:" + value + b"\r\nHost: h\r\nAccept: */*\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nconnection: " + value + b"\r\n\r\n"):  # fmt: skip
            head = RequestParser().feed_simple(data)
            assert head is not None, data
            assert head.host == b"h" and head.keep_alive
            assert sorted(head.forward.split(b"\r\n")) == [b"", b"Accept: */*", b"Host: h"]


def test_other_connection_lines_and_hop_by_hop_fields_take_the_full_path():
    base = b"GET / HTTP/1.1\r\nHost: h\r\n"
    for value in OTHER_CONNECTION:
        assert RequestParser().feed_simple(base + b"Connection: " + value + b"\r\n\r\n") is None, value
    for extra in EXTRA:
        if extra == b"X-Secret: s":
            continue  # harmless unless the Connection line names it (OTHER_CONNECTION)
        data = base + b"Connection: keep-alive\r\n" + extra + b"\r\n\r\n"
        assert RequestParser().feed_simple(data) is None, extra
    twice = base + b"Connection: keep-alive\r\nConnection: keep-alive\r\n\r\n"
    assert RequestParser().feed_simple(twice) is None
    http10 = b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    assert RequestParser().feed_simple(http10) is None
    # "close" still closes: the full parser's head says so, and the fast path never answers it
    head = RequestParser().feed(base + b"Connection: close\r\n\r\n")[0]
    assert head.keep_alive is False


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="hostTEcnax-ruplOHk2:", max_size=20).map(str.encode))
def test_the_special_name_trie_matches_exactly_the_case_folded_names(line):
    # field_names_re replaced `(?i:name|...):` in the simple paths' look-aheads: the same set.
    import re

    from proxy.http1._abnf import field_names_re
    from proxy.http1._simple import _REQUEST_SPECIAL, _RESPONSE_SPECIAL

    for names in (_REQUEST_SPECIAL.split(b"|"), _RESPONSE_SPECIAL):
        folded = re.compile(rb"(?i:" + b"|".join(names) + rb"):")
        trie = re.compile(field_names_re(names))
        assert bool(trie.match(line)) == bool(folded.match(line)), line
    for name in _REQUEST_SPECIAL.split(b"|"):
        assert re.compile(field_names_re(_REQUEST_SPECIAL.split(b"|"))).fullmatch(name.upper() + b":")
