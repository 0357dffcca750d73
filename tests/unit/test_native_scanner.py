"""The simple recognisers' byte scanners (proxy/http1/_simple.py `_scan_request`, `_scan_response`,
what the compiled module runs) against their regexes (`_match_request`, `_match_response`, what the
pure twin runs): hypothesis feeds both the same bytes, near-simple messages and every kind of
damage a scanner could get wrong (obs-fold, bare CR or LF, NUL, non-ASCII, duplicate or overlong
Content-Length, Transfer-Encoding, very long lines, odd token names), and requires identical
results, errors included, and the same lines to forward. These run in both passes: in the pure
pass the scanners run interpreted (the same source), in the compiled pass compiled, where
`simple_request` is also compared with the pure twin's."""

from __future__ import annotations

import importlib

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from tests.unit.test_http1_simple import (
    near_simple_requests,
    near_simple_responses,
    requests,
    responses,
)

simple = importlib.import_module("proxy.http1._simple")


def outcome(fn, *args):
    """What a call gives, forwarded lines included (RequestHead's equality leaves them out)."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc))
    return ("ok", result, getattr(result, "forward", None))


def same_request(data, max_head=8192) -> None:
    want = outcome(simple._match_request, data, max_head)
    assert outcome(simple._scan_request, data, max_head) == want, data
    if simple.COMPILED and not _native.pure_requested():
        assert outcome(_native.load_pure("proxy.http1._simple").simple_request, data, max_head) == want, data


def same_response(data, max_head=8192) -> None:
    want = outcome(simple._match_response, data, max_head)
    assert outcome(simple._scan_response, data, max_head) == want, data
    if simple.COMPILED and not _native.pure_requested():
        assert outcome(_native.load_pure("proxy.http1._simple").simple_response, data, max_head) == want, data


# -- requests -----------------------------------------------------------------------------------

def _cases(word: bytes) -> st.SearchStrategy[bytes]:
    """`word` in a random mix of upper and lower case."""
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda up: bytes(c ^ 32 if u and chr(c).isalpha() else c for c, u in zip(word, up)))


SPECIAL_REQUEST = [b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect", b"te",
                   b"trailer", b"keep-alive", b"proxy-connection", b"http2-settings", b"x-forwarded-for",
                   b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"]  # fmt: skip
# Token names that are none of those: near them (one letter off, a prefix, a suffix), ordinary,
# and of odd characters; then names that are no token at all.
TOKEN_NAMES = [b"hos", b"hostt", b"connectio", b"connections", b"t", b"tee", b"x-request-ids", b"content-lengt",
               b"!#$%&'*+-.^_`|~", b"X_Y", b"a.b", b"9", b"User-Agent", b"Accept", b"Cookie", b"Accept-Language",
               b"keep-alivE-", b"Proxy-Authorization", b"x" * 300]  # fmt: skip
BAD_NAMES = [b"ho st", b"host ", b" host", b"(h)", b"h@", b"caf\xc3\xa9", b"", b"\x00", b"h\x7f", b'x"y',
             b"Content-Length\x00", b"K\xe9ep-Alive", b"a\r", b"a\nb"]  # fmt: skip
KEEP_ALIVE = [b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE", b" keep-alive \t", b"\tkeep-alive", b"keEp-aLive  "]
NOT_KEEP_ALIVE = [b"keep-alive,", b"keep-alive, close", b"close", b"keep\ralive", b"keep-alivex", b"keep-aliv",
                  b"keep alive", b"upgrade", b"keep-alive\x00", b"k\xe9ep-alive", b"keep_alive", b"keep\xadalive",
                  b"keep-alive x"]  # fmt: skip
HOSTS = [b"h", b"example.com", b"127.0.0.1:8080", b"[::1]", b"[::1]:80", b"[v1.x]:8", b"a%2Fb", b"", b"  ", b"h:",
         b"h\t ", b"x" * 300, b"[%]"]  # fmt: skip
BAD_HOSTS = [b"[]", b"[::1", b"::1]", b"[::1]x", b"[::1]:8x", b"a:b:c", b"h:8x", b"a b", b"a/b", b"h\x00",
             b"caf\xc3\xa9", b"[:\x00]", b"[gg]", b"h@i"]  # fmt: skip
VALUES = [b"", b"v", b"*/*", b"a b", b"x\ty", b"\t", b"chunked", b"0", b"100-continue", b"  padded  ",
          b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", b"x" * 5000, b"~!@#$%^&*()"]  # fmt: skip
BAD_BYTES = [b"\x00", b"\x80", b"\xff", b"\x7f", b"\x01", b"\r", b"\n", b"\x1f"]
SEPARATORS = [b":", b": ", b":\t", b": \t "]
BAD_SEPARATORS = [b" :", b"\t:", b""]
EOL = b"\r\n"
BAD_EOLS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r \n"]
# Bytes a damaged message gets, and where.
DAMAGE = st.sampled_from([b"", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n ", b"\r\n\t", b":", b"\x00", b"\x80",
                          b"\xff", b"#", b"[", b"]", b"0", b"9", b"A", b"-"])  # fmt: skip


def _cases(word: bytes) -> st.SearchStrategy[bytes]:
    """`word` in a random mix of upper and lower case."""
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda up: bytes(c ^ 32 if u and chr(c).isalpha() else c for c, u in zip(word, up)))


def _one(draw: st.DrawFn, choices: list[bytes]) -> bytes:
    return draw(st.sampled_from(choices))


@st.composite
def damaged(draw: st.DrawFn, message: bytes) -> bytes:
    """`message`, or a prefix of it, or it with a byte replaced, inserted or deleted, or more after it."""
    how = draw(st.sampled_from(["as is"] * 6 + ["prefix", "replace", "insert", "delete", "append"]))
    if how == "as is" or not message:
        return message
    i = draw(st.integers(0, len(message) - 1))
    if how == "prefix":
        return message[:i]
    if how == "replace":
        return message[:i] + draw(DAMAGE) + message[i + 1 :]
    if how == "insert":
        return message[:i] + draw(DAMAGE) + message[i:]
    if how == "delete":
        return message[:i] + message[i + 1 :]
    return message + draw(st.sampled_from([b"x", b"\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))


@st.composite
def _field_lines(draw: st.DrawFn, specials: list[bytes], values: list[bytes]) -> list[bytes]:
    """Field lines that pass, most of the time; otherwise with one to three flaws of the kinds
    that the recognisers must refuse (or, for a special name's line, read by its own rules)."""
    lines = [draw(st.sampled_from(TOKEN_NAMES).flatmap(_cases)) + _one(draw, SEPARATORS) + _one(draw, values)
             for _ in range(draw(st.integers(0, 6)))]  # fmt: skip
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        flaw = draw(st.sampled_from(["special", "bad name", "bad separator", "bad byte", "obs-fold", "bad eol"]))
        i = draw(st.integers(0, len(lines)))
        if flaw == "special":
            line = draw(st.sampled_from(specials).flatmap(_cases)) + _one(draw, SEPARATORS) + _one(draw, values)
        elif flaw == "bad name":
            line = _one(draw, BAD_NAMES) + b": v"
        elif flaw == "bad separator":
            line = b"X-Sep" + _one(draw, BAD_SEPARATORS) + b"v"
        elif flaw == "bad byte":
            value = _one(draw, values)
            j = draw(st.integers(0, len(value)))
            line = b"X-Bad: " + value[:j] + _one(draw, BAD_BYTES) + value[j:]
        elif flaw == "obs-fold":
            line = _one(draw, [b" folded", b"\tfolded", b" ", b"\t"])
        else:
            line = b"X-Eol: v" + _one(draw, BAD_EOLS) + b"X-After: w"
        lines.insert(i, line)
    return lines


def _insert(draw: st.DrawFn, lines: list[bytes], line: bytes) -> None:
    lines.insert(draw(st.integers(0, len(lines))), line)


@st.composite
def messy_requests(draw: st.DrawFn) -> bytes:
    method = _one(draw, [b"GET", b"HEAD"] * 4 + [b"get", b"POST", b"GETS", b"HEA", b""])
    target = _one(draw, [b"/", b"/a/b?c=d&e=%20", b"/~user:@!$'()*+,;=", b"//", b"/" + b"p" * 3000] * 2
                  + [b"/x#y", b"/{", b"/\x80", b"/a b", b"*", b"http://h/", b""])  # fmt: skip
    version = _one(draw, [b" HTTP/1.1"] * 8 + [b" HTTP/1.0", b" HTTP/1.11", b"  HTTP/1.1", b" http/1.1"])
    lines = draw(_field_lines(SPECIAL_REQUEST, VALUES))
    hosts = draw(st.sampled_from([1, 1, 1, 1, 1, 0, 2]))
    for _ in range(hosts):
        value = _one(draw, HOSTS * 3 + BAD_HOSTS)
        _insert(draw, lines, draw(_cases(b"Host")) + _one(draw, SEPARATORS) + value + _one(draw, [b"", b" ", b"\t "]))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        value = _one(draw, KEEP_ALIVE * 3 + NOT_KEEP_ALIVE)
        _insert(draw, lines, draw(_cases(b"Connection")) + _one(draw, SEPARATORS) + value)
    data = method + b" " + target + version + EOL + b"".join(line + EOL for line in lines) + EOL
    return draw(damaged(data))


MAX_HEADS = st.sampled_from([8192, 8192, 8192, 64, 0, -1, 1 << 40, 1 << 70])


@settings(max_examples=500, deadline=None)
@given(st.one_of(messy_requests(), requests(), near_simple_requests().flatmap(damaged)), MAX_HEADS)
def test_the_request_scanner_answers_as_the_regex(data, max_head):
    same_request(data, max_head)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_request_scanner_answers_as_the_regex_on_any_bytes(data):
    same_request(data)
    same_request(b"GET / HTTP/1.1\r\nHost: h\r\n" + data)


def test_the_request_scanner_on_chosen_cases():
    base = b"GET /a?b=c HTTP/1.1\r\n"
    accepted = [base + b"Host: h\r\n\r\n", b"HEAD / HTTP/1.1\r\nhOsT:\t[::1]:8 \r\nX:\r\n\r\n",
                base + b"Connection: Keep-Alive\t\r\nHost: h\r\nCookie: a=b\r\n\r\n",
                base + b"Host: h\r\nX: y\r\nconnection:keep-alive\r\nZ: w\r\n\r\n", base + b"Host:\r\n\r\n",
                base + b"!#$%&'*+-.^_`|~: v\r\nHost: h\r\n\r\n", base + b"Host: h\r\nX: " + b"v" * 6000 + b"\r\n\r\n"]  # fmt: skip
    refused = [base + b"Host: h\r\n folded\r\n\r\n", base + b"Host: h\r\nX: a\rb\r\n\r\n", base + b"Host: h\nX: y\r\n\r\n",
               base + b"Host: h\r\nX: \x00\r\n\r\n", base + b"Host: h\r\nX: caf\xc3\xa9\r\n\r\n",
               base + b"Host: h\r\nContent-Length: 0\r\n\r\n", base + b"Host: h\r\nTransfer-Encoding: chunked\r\n\r\n",
               base + b"Host: h\r\nConnection: keep\ralive\r\n\r\n", base + b"Host: h\r\nConnection: keep-alive\r\n"
               b"Connection: keep-alive\r\n\r\n", base + b"Host: h\r\nHost: h\r\n\r\n", base + b"Host: [::1\r\n\r\n",
               base + b"Host: []\r\n\r\n", base + b"Host: h\r\nX-Request-ID: 1\r\n\r\n", base + b"Host: h\r\n\r\n\r\n",
               base + b"Host: h\r\nH@: v\r\n\r\n", base + b"X: v\r\n\r\n"]  # fmt: skip
    for data in accepted:
        assert simple._scan_request(data, 8192) is not None, data
        same_request(data)
    for data in refused:
        assert simple._scan_request(data, 8192) is None, data
        same_request(data)
    forwarded = simple._scan_request(base + b"Host: h\r\nConnection: keep-alive\r\nX: y\r\n\r\n", 8192).forward
    assert forwarded == b"Host: h\r\nX: y\r\n"


# -- responses ----------------------------------------------------------------------------------

SPECIAL_RESPONSE = [b"content-length", b"connection", b"transfer-encoding", b"upgrade", b"te", b"trailer",
                    b"keep-alive", b"proxy-connection"]  # fmt: skip
RESPONSE_VALUES = VALUES + [b"Sat, 05 Dec 2026 07:00:00 GMT", b"caf\xc3\xa9", b"\x80\xff", b'"6571a2b0-c"']
BAD_LENGTHS = [b"2 2", b"+2", b"-1", b"2,2", b"", b"0x2", b"9" * 16, b"0" * 16, b"0" * 15 + b"2", b"2\x00", b"2 x"]


@st.composite
def messy_responses(draw: st.DrawFn) -> bytes:
    body = _one(draw, [b"", b"ok", b"hello world\n", b"x" * 3000])
    status = _one(draw, [b"200 OK", b"200", b"200 ", b"404 Not Found", b"599 x", b"503 caf\xc3\xa9"] * 2
                  + [b"199 x", b"600 x", b"204 No", b"304 NM", b"2x0 x", b"20", b"200\tOK", b"200 a\x00", b"500 \x7f",
                     b"200 a\rb"])  # fmt: skip
    version = _one(draw, [b"HTTP/1.1 "] * 8 + [b"HTTP/1.0 ", b"HTTP/1.1  ", b"http/1.1 "])
    lines = draw(_field_lines(SPECIAL_RESPONSE + [b"host"], RESPONSE_VALUES))
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 1, 0, 2]))):  # Content-Length: none, one, two
        length = _one(draw, [b"%d" % len(body), b"%d" % len(body), b"00%d" % len(body), b"%d " % len(body),
                             b"\t%d\t" % len(body), b"0" * 14 + b"%d" % len(body)] * 2
                      + [b"%d" % (len(body) + 1), b"0"] + BAD_LENGTHS)  # fmt: skip
        _insert(draw, lines, draw(_cases(b"Content-Length")) + _one(draw, SEPARATORS) + length)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        value = _one(draw, KEEP_ALIVE * 3 + NOT_KEEP_ALIVE)
        _insert(draw, lines, draw(_cases(b"Connection")) + _one(draw, SEPARATORS) + value)
    data = version + status + EOL + b"".join(line + EOL for line in lines) + EOL + body
    return draw(damaged(data))


@settings(max_examples=500, deadline=None)
@given(st.one_of(messy_responses(), responses().map(lambda c: c[0]), near_simple_responses().map(lambda c: c[0]).flatmap(damaged)),
       st.sampled_from([8192, 8192, 8192, 40, 0, -5, 1 << 70, None, "1"]))  # fmt: skip
def test_the_response_scanner_answers_as_the_regex(data, max_head):
    same_response(data, max_head)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_response_scanner_answers_as_the_regex_on_any_bytes(data):
    same_response(data)
    same_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + data)


def test_the_response_scanner_on_chosen_cases():
    ok = b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    cut = ok.index(b"\r\nConnection")  # from the CRLF before the line to the CRLF that ends it
    assert simple._scan_response(ok, 8192) == (200, len(ok) - 2, 2, cut, cut + len(b"\r\nConnection: keep-alive"))
    accepted = [ok, b"HTTP/1.1 404\r\ncontent-length:000000000000002\r\n\r\nok",
                b"HTTP/1.1 200 caf\xc3\xa9\r\nX: \x80\xff\r\nContent-Length: 0\r\n\r\n"]  # fmt: skip
    refused = [ok[:-1], ok + b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000002\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000\r\n\r\n", b"HTTP/1.1 200\tOK\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\x00b\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\nb\r\n\r\nok",
               b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 199 x\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep\ralive\r\n\r\n"]  # fmt: skip
    for data in accepted:
        assert simple._scan_response(data, 8192) is not None, data
        same_response(data)
    for data in refused:
        assert simple._scan_response(data, 8192) is None, data
        same_response(data)
    for max_head in (None, "1", 1.5):  # compared only once the head matched: the same errors
        same_response(ok, max_head)
        same_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", max_head)


def test_other_argument_types_take_the_regex_path_alike():
    for data in (bytearray(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), memoryview(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
                 "GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, 5):  # fmt: skip
        same_request(data)
        same_response(data)


def test_the_head_limit_at_its_bounds():
    # The scanners compare the limit in C where it is an int: at, just below and just above the
    # sizes each compares it with (the request's length, the response head's length less 4),
    # and limits of other kinds (bool, huge, negative), against the regexes.
    req = b"GET /a HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nok"
    head = len(resp) - 2
    for max_head in (len(req) - 1, len(req), len(req) + 1, head - 5, head - 4, head - 3, True, False, -(1 << 70),
                     (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1):  # fmt: skip
        same_request(req, max_head)
        same_response(resp, max_head)
    assert simple._scan_request(req, len(req)) is not None and simple._scan_request(req, len(req) - 1) is None
    assert simple._scan_response(resp, head - 4) is not None and simple._scan_response(resp, head - 5) is None


def test_one_odd_byte_anywhere_in_a_value():
    # The value scan skips eight printable bytes at a time and, compiled on a little-endian
    # machine, goes on from the first byte of the eight that is not printable: every such byte
    # (controls, tab, DEL, obs-text, CR, LF) at every place of a value, both scanners, vs the regexes.
    odd = [*range(0x00, 0x20), 0x7F, 0x80, 0xA0, 0xFE, 0xFF]
    for c in odd:
        for at in range(0, 20):
            value = bytearray(b"abcdefghijklmnopqrstuvwx")
            value[at] = c
            value = bytes(value)
            same_request(b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + value + b"\r\nAccept: */*\r\n\r\n")
            same_request(b"GET / HTTP/1.1\r\nUser-Agent: " + value[:at + 1] + b"\r\nHost: h\r\n\r\n")
            same_response(b"HTTP/1.1 200 " + value + b"\r\nContent-Length: 2\r\n\r\nok")
            same_response(b"HTTP/1.1 200 OK\r\nServer: " + value + b"\r\nContent-Length: 2\r\n\r\nok")
            same_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: " + value[:at + 1] + b"\r\n\r\nok")
