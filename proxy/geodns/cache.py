"""The wire-answer cache and the hand-written query parser that feeds it (the hot path).

`parse_query(wire)` reads the commonest query shape straight from the bytes: a header with one
question and at most one additional record (an OPT of version 0, possibly carrying an ECS option),
no compression, nothing after it. Anything else returns None and takes the dnspython path, which
also judges whether it is malformed.

`AnswerCache` maps a key built from that parse (question lowercased, type, class, header flags,
EDNS presence, its DO bit and the UDP size limit, the ECS family and source prefix, and the policy decision
for this client) to a finished response. Two queries with equal keys get byte-identical answers
except for the ID, the question's letter case and the ECS address echoed, so a hit copies the
template and patches exactly those (the question sits at offset 12; the ECS address, ours being
the only option of the only additional record, ends the message). A change of health, drain or
config empties the cache (its generation moves on). In front of it, `Engine.handle` keeps a
repeat cache keyed by the query's bytes less its ID (handler.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AnswerCache", "FastQuery", "parse_query", "patch"]


@dataclass(frozen=True, slots=True)
class FastQuery:
    qname: bytes  # wire form as sent (case kept)
    qtype: int
    qclass: int
    edns: bool
    payload: int  # advertised UDP size; 512 without EDNS
    ecs_family: int  # 0: no ECS option
    ecs_srclen: int
    ecs_addr: bytes  # as sent: ceil(srclen / 8) bytes
    do: bool = False  # the DNSSEC OK bit, copied into the answer (RFC 3225)


def parse_query(wire: bytes) -> FastQuery | None:
    """The query's fields if it has the common, simple shape; None to take the full parser."""
    n = len(wire)
    # QR=0, opcode QUERY, RCODE 0; one question, no answer/authority, at most one additional
    if n < 17 or wire[2] & 0xF8 or wire[3] & 0x0F or wire[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return None
    ar = (wire[10] << 8) | wire[11]
    if ar > 1:
        return None
    i = 12
    while True:
        ln = wire[i]
        if ln == 0:
            break
        if ln > 63:  # a pointer or a reserved label type
            return None
        i += ln + 1
        if i >= n:
            return None
    i += 1
    if i - 12 > 255 or i + 4 > n:
        return None
    qname = wire[12:i]
    qtype = (wire[i] << 8) | wire[i + 1]
    qclass = (wire[i + 2] << 8) | wire[i + 3]
    i += 4
    if ar == 0:
        if i != n:
            return None
        return FastQuery(qname, qtype, qclass, False, 512, 0, 0, b"")
    # OPT: root name, type 41, class = payload, TTL = ext-rcode, version, flags; rdlen; options
    if i + 11 > n or wire[i] != 0 or wire[i + 1 : i + 3] != b"\x00\x29":
        return None
    payload = (wire[i + 3] << 8) | wire[i + 4]
    if wire[i + 5] or wire[i + 6]:  # extended rcode in a query, or a version above 0 (BADVERS)
        return None
    rdlen = (wire[i + 9] << 8) | wire[i + 10]
    i0 = i
    i += 11
    if i + rdlen != n:
        return None
    fam = srclen = 0
    addr = b""
    while i < n:
        if i + 4 > n:
            return None
        code = (wire[i] << 8) | wire[i + 1]
        olen = (wire[i + 2] << 8) | wire[i + 3]
        i += 4
        if i + olen > n:
            return None
        if code == 8:  # ECS
            if fam or olen < 4:
                return None
            fam = (wire[i] << 8) | wire[i + 1]
            srclen, scope = wire[i + 2], wire[i + 3]
            addr = wire[i + 4 : i + olen]
            bits = 32 if fam == 1 else 128 if fam == 2 else 0
            if not bits or scope or srclen > bits or len(addr) != (srclen + 7) // 8:
                return None
            if srclen % 8 and addr[-1] & (0xFF >> (srclen % 8)):
                return None  # bits beyond the source prefix: FORMERR, from the full path
        i += olen
    return FastQuery(qname, qtype, qclass, True, payload, fam, srclen, addr, bool(wire[i0 + 7] & 0x80))


def patch(template: bytes, wire: bytes, q: FastQuery) -> bytes:
    """A cached response for this query: its ID, its question's case, its ECS address."""
    end = 12 + len(q.qname)
    if q.ecs_family and q.ecs_addr:
        return wire[:2] + template[2:12] + q.qname + template[end : -len(q.ecs_addr)] + q.ecs_addr
    return wire[:2] + template[2:12] + q.qname + template[end:]


class AnswerCache:
    """Bounded dict of key -> (template, rcode); emptied when full or when state changes."""

    __slots__ = ("_data", "size", "generation", "hits", "misses")

    def __init__(self, size: int) -> None:
        self._data: dict[Any, tuple[bytes, int]] = {}
        self.size = size
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> tuple[bytes, int] | None:
        return self._data.get(key)

    def put(self, key: Any, template: bytes, rcode: int) -> None:
        if self.size <= 0:
            return
        if len(self._data) >= self.size:
            # Whole-cache reset instead of LRU bookkeeping on every hit: the working set of
            # questions refills in microseconds and a hit stays one dict lookup.
            self._data.clear()
        self._data[key] = (template, rcode)

    def clear(self) -> None:
        self._data.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._data)
