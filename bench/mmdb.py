"""A minimal MaxMind DB (.mmdb) writer: IPv4 networks -> {"country": {"iso_code": CODE}}.

PowerDNS's GeoIP backend answers `%co` from such a file, so the geodns bench gives it a tiny
database of its own (the real GeoLite2 files cannot be downloaded here) and its geo lookups are
real lookups, not the "unknown" fallback it uses without a database.

Format (MaxMind DB spec 2.0): a binary search tree over the address bits, 24-bit records (a record
below `node_count` is the next node, equal to it is "no data", above it points into the data
section at `record - node_count - 16`), 16 zero bytes, the data section, then the metadata map
after the marker b"\\xab\\xcd\\xefMaxMind.com". Only the types needed here are encoded: maps,
UTF-8 strings, uint16/uint32/uint64 and arrays.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

__all__ = ["write_country_mmdb"]

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_RECORD_BYTES = 3  # 24-bit records
_STRING, _UINT16, _UINT32, _MAP = 2, 5, 6, 7
_UINT64, _ARRAY = 9, 11  # extended types (stored as type 0 plus a byte: type - 7)


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 285:
        head, extra = 29, bytes([size - 29])
    else:
        head, extra = 30, (size - 285).to_bytes(2, "big")
    if kind <= 7:
        return bytes([(kind << 5) | head]) + extra
    return bytes([head, kind - 7]) + extra


def _encode(value: Any, kind: int | None = None) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(_STRING, len(raw)) + raw
    if isinstance(value, dict):
        out = _control(_MAP, len(value))
        for k, v in value.items():
            out += _encode(k) + (_encode(*v) if isinstance(v, tuple) else _encode(v))
        return out
    if isinstance(value, list):
        return _control(_ARRAY, len(value)) + b"".join(_encode(v) for v in value)
    if isinstance(value, int):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        return _control(kind or _UINT32, len(raw)) + raw
    raise TypeError(f"cannot encode {value!r}")


def write_country_mmdb(path: Path, networks: dict[str, str]) -> None:
    """Write an IPv4 database mapping each CIDR in `networks` to its country ISO code (the
    networks must not nest: a longer prefix inside a shorter one is not supported)."""
    nodes: list[list[Any]] = [[None, None]]  # [left, right]: node index, ("data", offset) or None
    data = b""
    offsets: dict[str, int] = {}
    for cidr, code in networks.items():
        net = ipaddress.IPv4Network(cidr)
        if code not in offsets:
            offsets[code] = len(data)
            data += _encode({"country": {"iso_code": code}})
        bits = int(net.network_address)
        node = 0
        for depth in range(net.prefixlen):
            bit = (bits >> (31 - depth)) & 1
            if depth == net.prefixlen - 1:
                nodes[node][bit] = ("data", offsets[code])
                break
            nxt = nodes[node][bit]
            if not isinstance(nxt, int):
                nodes.append([None, None])
                nxt = nodes[node][bit] = len(nodes) - 1
            node = nxt
    count = len(nodes)

    def record(value: Any) -> int:
        if value is None:
            return count
        if isinstance(value, int):
            return value
        return count + 16 + value[1]

    tree = b"".join(record(left).to_bytes(_RECORD_BYTES, "big") + record(right).to_bytes(_RECORD_BYTES, "big")
                    for left, right in nodes)  # fmt: skip
    metadata = _encode({
        "binary_format_major_version": (2, _UINT16), "binary_format_minor_version": (0, _UINT16),
        "build_epoch": (int(time.time()), _UINT64), "database_type": "tierproxy-bench-Country",
        "description": {"en": "tierproxy bench: loopback and documentation networks"},
        "ip_version": (4, _UINT16), "languages": ["en"], "node_count": (count, _UINT32),
        "record_size": (_RECORD_BYTES * 8, _UINT16),
    })  # fmt: skip
    path.write_bytes(tree + bytes(16) + data + _METADATA_MARKER + metadata)
