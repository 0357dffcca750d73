"""A minimal MaxMind DB writer for tests: an IPv4 tree (record size 24) whose networks point at
maps of strings, written by the spec (https://maxmind.github.io/MaxMind-DB/), so tests need no
GeoIP download and no writer package."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any


def _ctrl(kind: int, size: int) -> bytes:
    assert size < 29
    if kind <= 7:
        return bytes(((kind << 5) | size,))
    return bytes((size, kind - 7))  # extended type


def encode(value: Any) -> bytes:
    if isinstance(value, tuple):  # (type, int): metadata fields have fixed integer types
        kind, n = value
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
        return _ctrl(kind, len(raw)) + raw
    if isinstance(value, str):
        raw = value.encode()
        return _ctrl(2, len(raw)) + raw
    if isinstance(value, bool):
        return _ctrl(14, int(value))
    if isinstance(value, int):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        return _ctrl(6 if value < 2**32 else 9, len(raw)) + raw
    if isinstance(value, dict):
        return _ctrl(7, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _ctrl(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(type(value))


def write_mmdb(path: Path, networks: dict[str, dict[str, Any]]) -> None:
    """`networks`: IPv4 CIDR -> record (a map)."""
    nodes: list[list[Any]] = [[None, None]]
    data = b""
    for cidr, record in networks.items():
        net = ipaddress.IPv4Network(cidr)
        offset = len(data)
        data += encode(record)
        bits = int(net.network_address)
        node = 0
        for i in range(net.prefixlen):
            bit = (bits >> (31 - i)) & 1
            if i == net.prefixlen - 1:
                nodes[node][bit] = ("data", offset)
            else:
                child = nodes[node][bit]
                if not isinstance(child, int):
                    nodes.append([None, None])
                    child = nodes[node][bit] = len(nodes) - 1
                node = child
    count = len(nodes)

    def rec(v: Any) -> int:
        if v is None:
            return count
        if isinstance(v, int):
            return v
        return count + 16 + v[1]

    tree = b"".join(struct.pack(">I", rec(left))[1:] + struct.pack(">I", rec(right))[1:] for left, right in nodes)
    u16, u32, u64 = 5, 6, 9
    meta = {"node_count": (u32, count), "record_size": (u16, 24), "ip_version": (u16, 4),
            "database_type": "tierproxy-test", "languages": ["en"],
            "binary_format_major_version": (u16, 2), "binary_format_minor_version": (u16, 0),
            "build_epoch": (u64, 1700000000), "description": {"en": "test"}}
    path.write_bytes(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + encode(meta))
