"""The PROXY protocol codec (proxy/core/proxyproto.py): headers written by hand from the spec,
round trips, every split point, and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.proxyproto import (
    MAX_V1,
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def test_v1_headers_from_the_spec():
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert parse_proxy_header(line + b"GET /") == ProxyHeader(len(line), 1, ("192.168.0.1", 56324), ("192.168.0.11", 443))
    line6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    assert parse_proxy_header(line6) == ProxyHeader(len(line6), 1, ("2001:db8::1", 1), ("2001:db8::2", 65535))
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, 1, None, None)
    assert parse_proxy_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None


def test_v2_headers_from_the_spec():
    body = socket.inet_aton("10.1.2.3") + socket.inet_aton("10.9.9.9") + struct.pack("!HH", 1000, 80)
    hdr = SIG + b"\x21\x11" + struct.pack("!H", len(body) + 7) + body + b"\x04\x00\x04abcd"  # one TLV
    assert parse_proxy_header(hdr + b"rest") == ProxyHeader(len(hdr), 2, ("10.1.2.3", 1000), ("10.9.9.9", 80))
    body6 = socket.inet_pton(socket.AF_INET6, "::1") * 2 + struct.pack("!HH", 7, 8)
    hdr6 = SIG + b"\x21\x21" + struct.pack("!H", 36) + body6
    assert parse_proxy_header(hdr6) == ProxyHeader(52, 2, ("::1", 7), ("::1", 8))
    assert parse_proxy_header(SIG + b"\x20\x00\x00\x00") == ProxyHeader(16, 2, None, None)  # LOCAL
    assert parse_proxy_header(SIG + b"\x21\x00\x00\x00") == ProxyHeader(16, 2, None, None)  # UNSPEC
    unix = SIG + b"\x21\x31" + struct.pack("!H", 216) + b"\x00" * 216
    assert parse_proxy_header(unix).source is None


@pytest.mark.parametrize("bad", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY " + b"1" * (MAX_V1 - 6),
    b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01\x02\x00",
    SIG[:11] + b"X" + b"\x21\x11\x00\x0c",
    SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
    SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
    SIG + b"\x21\x11\x00\x08" + b"\x00" * 8,  # too short for IPv4
    SIG + b"\x21\x21\x00\x0c" + b"\x00" * 12,  # too short for IPv6
    SIG + b"\x21\x41\x00\x00",  # family 4
    SIG + b"\x21\x11\xff\xff",  # longer than we hold
])
def test_malformed_headers_are_refused(bad):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(bad)


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
pairs = st.one_of(st.tuples(ipv4, port, ipv4, port), st.tuples(ipv6, port, ipv6, port))


@given(pairs, st.sampled_from([encode_v1, encode_v2]), st.binary(max_size=40))
def test_round_trip_and_every_split_point(addrs, encode, rest):
    src, sport, dst, dport = addrs
    wire = encode((src, sport), (dst, dport))
    got = parse_proxy_header(wire + rest)
    assert isinstance(got, ProxyHeader) and got.length == len(wire)
    assert got.source == (str(ipaddress.ip_address(src)), sport)
    assert got.dest == (str(ipaddress.ip_address(dst)), dport)
    for cut in range(len(wire)):
        more = parse_proxy_header(wire[:cut])
        # incomplete: asks for more, never beyond the header's own end
        assert isinstance(more, int) and 0 < more and cut + more <= max(len(wire), MAX_V1)
        if encode is encode_v2:
            assert cut + more <= len(wire)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_header_a_request_for_more_or_the_protocol_error(data):
    try:
        got = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if isinstance(got, int):
        assert got > 0
    else:
        assert 0 < got.length <= len(data)


@given(st.sampled_from([b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", SIG + b"\x20\x00\x00\x00"]),
       st.binary(min_size=1, max_size=20))
def test_a_header_with_garbage_inside_is_never_taken_as_valid_elsewhere(header, junk):
    # Junk spliced into a valid header: refused, incomplete, or a header no longer than the input
    i = len(header) // 2
    try:
        got = parse_proxy_header(header[:i] + junk + header[i:])
    except ProxyProtocolError:
        return
    assert isinstance(got, int) or got.length <= len(header) + len(junk)


def test_encoders_write_the_spec_bytes():
    assert encode_v1(("1.2.3.4", 5), ("6.7.8.9", 10)) == b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n"
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert encode_v2(("1.2.3.4", 5), ("6.7.8.9", 10)) == (
        SIG + b"\x21\x11\x00\x0c" + bytes([1, 2, 3, 4, 6, 7, 8, 9]) + b"\x00\x05\x00\x0a")
    assert encode_v2(None, None) == SIG + b"\x20\x00\x00\x00"
    with pytest.raises(ValueError):
        encode_v1(("1.2.3.4", 1), ("::1", 2))
