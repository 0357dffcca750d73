"""An HPACK encoder for the balancer's HTTP/2 responses that never uses the dynamic table, so each
field's encoding depends on nothing but the field and can be cached (RFC 7541).

`h2`'s own encoder (the `hpack` library) looks every field up in its tables, adds it to the
dynamic table, Huffman-codes it and writes the integers bit by bit, for every response; that was
the largest single cost of sending a response's HEADERS. This one puts a table size update to 0 at
the start of the connection's first header block (and again after the client changes
SETTINGS_HEADER_TABLE_SIZE, so its decoder hears it, RFC 7541 4.2), then writes each field as a
static-table index when the whole field is there (`:status: 200`), else as a literal without
indexing (6.2.2) with the static table's index for its name when it has one, the value Huffman
coded when that is shorter. The bytes for a field are made once per connection and reused: the
cost of a response's header block becomes one dictionary lookup per field.

The price is a few bytes per response that the dynamic table would have saved on repeated
fields (server, content-type...); the balancer trades them for CPU.

It plugs in as `H2Connection.encoder`: h2 calls `encode(headers)` and sets `header_table_size`.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

__all__ = ["StaticEncoder", "encode_integer"]

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
# RFC 7541 Appendix A, 1-based: the whole field, and each name's first index.
_FIELD_INDEX: dict[tuple[bytes, bytes], int] = {}
_NAME_INDEX: dict[bytes, int] = {}
for _i, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FIELD_INDEX.setdefault((_name, _value), _i)
    _NAME_INDEX.setdefault(_name, _i)
del _i, _name, _value

_SIZE_UPDATE_0 = b"\x20"  # 001xxxxx, size 0 (RFC 7541 6.3)
CACHE_FIELDS = 2048  # distinct fields remembered per connection (then the cache starts over)


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 5.1: `value` in an N-bit prefix, `first` holding the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """RFC 7541 5.2: Huffman coded when shorter."""
    coded = _HUFFMAN.encode(data)
    if len(coded) < len(data):
        return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(data), 7) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field, without touching any dynamic table."""
    index = _FIELD_INDEX.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # 6.1 indexed
    index = _NAME_INDEX.get(name)
    if index is not None:
        return encode_integer(index, 4) + _string(value)  # 6.2.2, indexed name
    return b"\x00" + _string(name) + _string(value)  # 6.2.2, new name


class StaticEncoder:
    """Per connection: h2's `encoder`. Fields are (name, value) bytes, names lowercased."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self._announce = True  # the next block starts with a table size update to 0
        self._table_size = 4096

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The client's SETTINGS_HEADER_TABLE_SIZE: we use none of it, and say so again.
        self._table_size = value
        self._announce = True

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = self._cache
        parts = []
        if self._announce:
            self._announce = False
            parts.append(_SIZE_UPDATE_0)
        for field in headers:
            hit = cache.get(field)
            if hit is None:
                if len(cache) >= CACHE_FIELDS:
                    cache.clear()
                hit = cache[field] = encode_field(field[0], field[1])
            parts.append(hit)
        return b"".join(parts)
