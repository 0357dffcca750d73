"""Request-smuggling and malformed-request table for RequestParser.

Each case is fed whole and one byte at a time; both must raise ProtocolError with the expected
status_hint, and the bad request must never reach EndOfMessage (errors in a chunked body come
after its RequestHead, so heads may appear).
"""

from __future__ import annotations

import pytest

from proxy.http1 import EndOfMessage, ProtocolError, RequestHead, RequestParser

H = b"Host: example.com\r\n"
P = b"POST / HTTP/1.1\r\n" + H
CH = P + b"Transfer-Encoding: chunked\r\n\r\n"

CASES = [
    # RFC 9112 6.3 item 3: CL together with TE, either order.
    ("cl_then_te", P + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_then_cl", P + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    # RFC 9112 6.3 item 5: duplicate / list Content-Length that differ (identical ones are one
    # value, RFC 9110 8.6: tests/unit/test_http1_lenient.py), or with an invalid member.
    ("dup_cl_differ", P + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", 400),
    ("dup_cl_list", P + b"Content-Length: 5, 6\r\n\r\nabcdef", 400),
    ("dup_cl_same_then_differ", P + b"Content-Length: 5\r\nContent-Length: 5, 6\r\n\r\nabcdef", 400),
    ("dup_cl_list_then_differ", P + b"Content-Length: 5, 5\r\nX: y\r\nContent-Length: 6\r\n\r\nabcdef", 400),
    ("cl_list_empty_member", P + b"Content-Length: 5,\r\n\r\nabcde", 400),
    ("cl_list_plus_member", P + b"Content-Length: 5, +5\r\n\r\nabcde", 400),
    ("dup_cl_same_and_te", P + b"Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_tab_and_cl", P + b"Transfer-Encoding: chunked\t\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("te_chunked_tab_gzip", P + b"Transfer-Encoding: chunked\t, gzip\r\n\r\n0\r\n\r\n", 400),
    ("cl_nondigit", P + b"Content-Length: abc\r\n\r\n", 400),
    ("cl_hex", P + b"Content-Length: 0x5\r\n\r\nabcde", 400),
    ("cl_plus", P + b"Content-Length: +5\r\n\r\nabcde", 400),
    ("cl_minus", P + b"Content-Length: -5\r\n\r\nabcde", 400),
    ("cl_overflow", P + b"Content-Length: 184467440737095516160\r\n\r\n", 400),
    ("cl_empty", P + b"Content-Length:\r\n\r\n", 400),
    ("cl_inner_space", P + b"Content-Length: 1 2\r\n\r\n", 400),
    ("cl_underscore", P + b"Content-Length: 1_2\r\n\r\n", 400),
    # RFC 9112 6.3 item 4 / 7: TE must end in chunked, once; unknown codings are 501 (6.1).
    ("te_final_gzip", P + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    ("te_chunked_then_gzip", P + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te_identity", P + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("te_chunked_twice", P + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    (
        "te_chunked_two_lines",
        P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("te_unknown_coding", P + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te_space_before_colon", P + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    # RFC 9112 6.1: HTTP/1.0 + Transfer-Encoding is faulty framing.
    ("http10_te", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # RFC 9112 5.2: obs-fold.
    ("obs_fold_sp", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    ("obs_fold_ht", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n", 400),
    ("obs_fold_first_line", b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", 400),
    # RFC 9112 2.2: bare CR / bare LF (we accept CRLF only).
    ("bare_lf_request_line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400),
    ("bare_lf_header", b"GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n", 400),
    ("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nHost: example.com\n\n", 400),
    ("bare_cr_header", b"GET / HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n", 400),
    ("bare_cr_request_line", b"GET / HTTP/1.1\r" + H + b"\r\n", 400),
    # RFC 9110 5.5: CTLs in field values.
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("ctl_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("del_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("esc_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x1bb\r\n\r\n", 400),
    # RFC 9112 5.1: no whitespace between field name and colon.
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", 400),
    ("tab_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n", 400),
    ("host_space_before_colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400),
    # RFC 9110 5.6.2: field names are tokens.
    ("name_paren", b"GET / HTTP/1.1\r\n" + H + b"X(a): b\r\n\r\n", 400),
    ("name_space", b"GET / HTTP/1.1\r\n" + H + b"X a: b\r\n\r\n", 400),
    ("name_nul", b"GET / HTTP/1.1\r\n" + H + b"X\x00a: b\r\n\r\n", 400),
    ("name_nonascii", b"GET / HTTP/1.1\r\n" + H + b"X\xe9: b\r\n\r\n", 400),
    ("name_empty", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", 400),
    ("no_colon", b"GET / HTTP/1.1\r\n" + H + b"Xb\r\n\r\n", 400),
    # RFC 9112 7.1: chunk-size = 1*HEXDIG, chunk-ext grammar, CRLF after chunk data.
    ("chunk_nonhex", CH + b"zz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_negative", CH + b"-3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_0x_prefix", CH + b"0x3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_too_many_digits", CH + b"10000000000000000\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_size_trailing_space", CH + b"3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_size_leading_space", CH + b" 3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_missing_crlf", CH + b"3\r\nabcX\r\n0\r\n\r\n", 400),
    ("chunk_size_bare_lf", CH + b"3\nabc\r\n0\r\n\r\n", 400),
    ("chunk_data_bare_lf", CH + b"3\r\nabc\n0\r\n\r\n", 400),
    ("chunk_ext_ctl", CH + b"3;a\x01\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_ext_space_in_name", CH + b"3;a b\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_ext_bad_quote", CH + b'3;a="b\x00"\r\nabc\r\n0\r\n\r\n', 400),
    ("chunk_empty_size", CH + b"\r\nabc\r\n0\r\n\r\n", 400),
    # RFC 9112 3 / RFC 9110 15.5.15: overlong request line.
    ("request_line_too_long", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (
        "head_too_large",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(700))
        + b"\r\n",
        431,
    ),
    ("one_huge_header", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 70000 + b"\r\n\r\n", 431),
    # RFC 9112 3.2: Host rules.
    ("missing_host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two_hosts", b"GET / HTTP/1.1\r\n" + H + b"Host: evil.example\r\n\r\n", 400),
    ("two_identical_hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host_with_userinfo", b"GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400),
    ("host_with_slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    # Versions: only 1.0 and 1.1 (RFC 9110 15.6.6).
    ("http_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http_1_2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http_3_0", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("http_0_9_no_version", b"GET /\r\n" + H + b"\r\n", 505),
    ("http_version_garbage", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("http_lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    # Targets (RFC 9112 3.2).
    ("fragment_in_target", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk_not_options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_userinfo", b"GET http://u:p@example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_other_scheme", b"GET ftp://example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_no_authority", b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target_space", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target_tab", b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target_nonascii", b"GET /\xe9 HTTP/1.1\r\n" + H + b"\r\n", 400),
    # Methods.
    ("unknown_method", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("lowercase_method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    # Upgrade with a body: llhttp would pass the body on as tunnel bytes.
    (
        "upgrade_with_body",
        b"POST / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        400,
    ),
    # Garbage.
    ("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
    ("nul_first", b"\x00GET / HTTP/1.1\r\n" + H + b"\r\n", 400),
]


def _feed_whole(data: bytes) -> ProtocolError:
    parser = RequestParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(data)
        parser.feed_eof()
    return info.value


def _feed_bytewise(data: bytes) -> ProtocolError:
    parser = RequestParser()
    with pytest.raises(ProtocolError) as info:
        for i in range(len(data)):
            for ev in parser.feed(data[i : i + 1]):
                assert not isinstance(ev, EndOfMessage), ev
        parser.feed_eof()
    return info.value


@pytest.mark.parametrize("data,hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_whole(data: bytes, hint: int) -> None:
    err = _feed_whole(data)
    assert err.status_hint == hint, str(err)
    assert not any(isinstance(ev, EndOfMessage) for ev in err.events)


@pytest.mark.parametrize("data,hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_byte_at_a_time(data: bytes, hint: int) -> None:
    err = _feed_bytewise(data)
    assert err.status_hint == hint, str(err)


@pytest.mark.parametrize("data,hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parser_is_dead_after_error(data: bytes, hint: int) -> None:
    parser = RequestParser()
    with pytest.raises(ProtocolError):
        parser.feed(data)
        parser.feed_eof()
    with pytest.raises(ProtocolError) as again:
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert again.value.status_hint == hint
    with pytest.raises(ProtocolError):
        parser.feed_eof()


def test_error_after_good_pipelined_request_keeps_earlier_events() -> None:
    good = b"GET /1 HTTP/1.1\r\n" + H + b"\r\n"
    bad = b"GET /2 HTTP/1.1\r\n" + H + b"X : y\r\n\r\n"
    parser = RequestParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(good + bad)
    heads = [ev for ev in info.value.events if isinstance(ev, RequestHead)]
    assert [h.target for h in heads] == [b"/1"]


def test_content_length_over_max_body_is_413_up_front() -> None:
    parser = RequestParser(max_body_bytes=10)
    with pytest.raises(ProtocolError) as info:
        parser.feed(P + b"Content-Length: 11\r\n\r\n")  # no body bytes sent yet
    assert info.value.status_hint == 413


def test_content_length_at_max_body_is_fine() -> None:
    parser = RequestParser(max_body_bytes=10)
    events = parser.feed(P + b"Content-Length: 10\r\n\r\n0123456789")
    assert events[-1].__class__.__name__ == "EndOfMessage"


def test_chunked_total_over_max_body_is_413() -> None:
    parser = RequestParser(max_body_bytes=10)
    parser.feed(CH + b"6\r\nabcdef\r\n")
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"5\r\nabcde\r\n")
    assert info.value.status_hint == 413


def test_endless_trailer_is_bounded() -> None:
    parser = RequestParser(max_header_bytes=1000)
    parser.feed(CH + b"3\r\nabc\r\n0\r\nX-Trailer: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(200):
            parser.feed(b"v" * 10)
    assert info.value.status_hint == 431


def test_endless_head_line_dribbled_is_bounded() -> None:
    parser = RequestParser(max_header_bytes=1000)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(2000):
            parser.feed(b"v")
    assert info.value.status_hint == 431
