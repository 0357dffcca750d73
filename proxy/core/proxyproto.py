"""The PROXY protocol (HAProxy's spec, versions 1 and 2), sans-IO: parse a header, encode one.

A TCP balancer in front of a daemon sends one header first on each connection naming the real
client; a daemon sends one to its backends so they see the client too. `parse_proxy_header` takes
the bytes received so far and returns the header once it is whole, or how many more bytes may
still belong to it: a reader can then take exactly the header off the socket and leave the rest
(a TLS ClientHello, a request) to whoever comes next. Anything malformed is `ProxyProtocolError`;
the protocol has no error message, so the connection is simply closed.

Version 1: ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` or ``PROXY UNKNOWN...\\r\\n``, at
most 107 bytes. Version 2: a 12-byte signature, version/command, family/transport, a 16-bit
length, the addresses and TLVs (skipped). LOCAL (v2) and UNKNOWN (v1) carry no client: the
connection's own addresses stand.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_V1",
    "MAX_V2",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "encode_v1",
    "encode_v2",
    "parse_proxy_header",
]

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1 = 107  # the spec's bound, CRLF included
# The spec allows 16 + 65535 bytes; TLVs beyond this are not something a balancer in front of
# us sends, and a bound keeps a hostile peer from making us hold 64 KiB per connection.
MAX_V2 = 16 + 2048

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """Not a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes the header took on the wire
    version: int  # 1 or 2
    source: Address | None  # the client; None for LOCAL/UNKNOWN
    dest: Address | None  # the address the client connected to


def parse_proxy_header(buf: bytes) -> ProxyHeader | int:
    """The header at the start of `buf`, or (incomplete) the number of bytes that may still
    belong to it (every one of them does, up to that count). Raises ProxyProtocolError."""
    n = len(buf)
    head = buf[:12]
    if V2_SIGNATURE.startswith(head):
        if n < 16:
            return 16 - n
        return _parse_v2(buf)
    if V1_PREFIX.startswith(buf[:6]):
        if n < 6:
            return MAX_V1 - n
        end = buf.find(b"\r\n", 0, MAX_V1)
        if end < 0:
            if n >= MAX_V1:
                raise ProxyProtocolError("v1 header longer than 107 bytes")
            if b"\n" in buf or b"\r" in buf[:-1]:
                raise ProxyProtocolError("v1 header: a bare CR or LF")
            return MAX_V1 - n
        return _parse_v1(buf[: end + 2])
    raise ProxyProtocolError("no PROXY protocol header")


def _port(text: bytes) -> int:
    if not text.isdigit() or (len(text) > 1 and text.startswith(b"0")) or len(text) > 5:
        raise ProxyProtocolError(f"v1 header: bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"v1 header: port {port} out of range")
    return port


def _parse_v1(line: bytes) -> ProxyHeader:
    body = line[6:-2]
    if b"\r" in body or b"\n" in body:
        raise ProxyProtocolError("v1 header: a bare CR or LF")
    parts = body.split(b" ")
    if parts[0] == b"UNKNOWN":
        return ProxyHeader(len(line), 1, None, None)
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1 header: expected 'TCP4|TCP6 src dst sport dport' or 'UNKNOWN'")
    cls = ipaddress.IPv4Address if parts[0] == b"TCP4" else ipaddress.IPv6Address
    try:
        src = cls(parts[1].decode("ascii"))
        dst = cls(parts[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError(f"v1 header: bad {parts[0].decode()} address") from None
    return ProxyHeader(len(line), 1, (str(src), _port(parts[3])), (str(dst), _port(parts[4])))


def _parse_v2(buf: bytes) -> ProxyHeader | int:
    if buf[:12] != V2_SIGNATURE:
        raise ProxyProtocolError("v2 header: bad signature")
    ver_cmd, fam, length = buf[12], buf[13], struct.unpack_from("!H", buf, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 header: version {ver_cmd >> 4}")
    cmd = ver_cmd & 0xF
    if cmd > 1:
        raise ProxyProtocolError(f"v2 header: command {cmd}")
    total = 16 + length
    if total > MAX_V2:
        raise ProxyProtocolError(f"v2 header: {total} bytes (more than {MAX_V2})")
    if len(buf) < total:
        return total - len(buf)
    if cmd == 0:  # LOCAL: the sender's own connection (a health check); addresses ignored
        return ProxyHeader(total, 2, None, None)
    family, transport = fam >> 4, fam & 0xF
    if family == 0 or transport != 1:
        # UNSPEC, UNIX or datagram: nothing a TCP client address can be made of
        if family > 3 or transport > 2:
            raise ProxyProtocolError(f"v2 header: family/transport {fam:#04x}")
        return ProxyHeader(total, 2, None, None)
    if family == 1:
        if length < 12:
            raise ProxyProtocolError("v2 header: too short for IPv4 addresses")
        src = str(ipaddress.IPv4Address(buf[16:20]))
        dst = str(ipaddress.IPv4Address(buf[20:24]))
        sport, dport = struct.unpack_from("!HH", buf, 24)
    elif family == 2:
        if length < 36:
            raise ProxyProtocolError("v2 header: too short for IPv6 addresses")
        src = str(ipaddress.IPv6Address(buf[16:32]))
        dst = str(ipaddress.IPv6Address(buf[32:48]))
        sport, dport = struct.unpack_from("!HH", buf, 48)
    elif family == 3:
        return ProxyHeader(total, 2, None, None)
    else:
        raise ProxyProtocolError(f"v2 header: family {family}")
    return ProxyHeader(total, 2, (src, sport), (dst, dport))


def _family(src: Address, dst: Address) -> int:
    a = ipaddress.ip_address(src[0])
    b = ipaddress.ip_address(dst[0])
    if a.version != b.version:
        raise ValueError("source and destination must be of one address family")
    return a.version


def encode_v1(src: Address | None, dst: Address | None) -> bytes:
    """A v1 header; UNKNOWN when either address is missing."""
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    v = _family(src, dst)
    sa = ipaddress.ip_address(src[0])
    da = ipaddress.ip_address(dst[0])
    return b"PROXY TCP%d %s %s %d %d\r\n" % (v, str(sa).encode(), str(da).encode(), src[1], dst[1])


def encode_v2(src: Address | None, dst: Address | None) -> bytes:
    """A v2 PROXY header (LOCAL when either address is missing)."""
    if src is None or dst is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    v = _family(src, dst)
    sa = ipaddress.ip_address(src[0]).packed
    da = ipaddress.ip_address(dst[0]).packed
    body = sa + da + struct.pack("!HH", src[1], dst[1])
    fam = 0x11 if v == 4 else 0x21
    return V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body
