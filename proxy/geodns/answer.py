"""Build a DNS response to a parsed query with dnspython: the slow path, taken on a cache miss.

Pure: bytes and messages in, bytes out; the data centers a policy name gets come from `resolve`
(the handler's decision for this client). What it follows:

* REFUSED for a name outside our zones (and for classes other than IN, and zone transfers),
  NXDOMAIN for a name that does not exist, NODATA for one without the asked type, both with the
  zone's SOA in the authority section, its TTL capped by the SOA minimum (RFC 2308);
* NOTIMP for opcodes other than QUERY, FORMERR for a query without exactly one question or with a
  bad ECS option, BADVERS for EDNS versions above 0 (RFC 6891);
* EDNS: the DO bit copied, unknown flags and options ignored, our buffer size advertised, the client's honoured for UDP (512 without EDNS); an answer
  too big for it goes out with TC=1 and no records, and TCP carries the whole answer;
* ECS (RFC 7871): echoed with the scope prefix the answer actually depends on (0 for names whose
  answer is the same for everyone);
* ANY: one RRset, not all of them (RFC 8482);
* the question is echoed as asked, case included (resolvers check it: DNS 0x20).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from proxy.geodns.config import NameConfig
from proxy.geodns.policy import Decision
from proxy.geodns.zones import Zone, ZoneSet

__all__ = ["Built", "Resolved", "build", "formerr", "udp_limit"]

A, AAAA, CNAME, ANY = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.ANY
MAX_CHAIN = 8


@dataclass(frozen=True, slots=True)
class Resolved:
    """A policy name's answer for this client: addresses by rdtype, TTL, ECS scope."""

    decision: Decision
    addresses: dict[int, list[str]]  # A / AAAA -> address texts
    ttl: int
    scope: int


@dataclass(frozen=True, slots=True)
class Built:
    wire: bytes
    rcode: int
    resolved: Resolved | None  # the policy answer used, if any (metrics, cache)
    region: str | None = None


Resolve = Callable[[NameConfig, "dns.edns.ECSOption | None"], tuple[Resolved, str | None]]


def formerr(wire: bytes) -> bytes | None:
    """A header-only FORMERR for input dnspython cannot parse; None (drop) for a short header or
    something that is itself a response (answering responses invites loops)."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    flags = (wire[2] & 0x79) | 0x80  # QR + the query's opcode and RD
    return wire[:2] + bytes((flags, dns.rcode.FORMERR)) + b"\x00" * 8


def udp_limit(query: dns.message.Message, max_payload: int) -> int:
    if query.edns < 0:
        return 512
    return min(max(512, query.payload), max_payload)


def _negative(resp: dns.message.Message, zone: Zone) -> None:
    soa = zone.soa
    ttl = min(soa.ttl, soa[0].minimum)
    rrset = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    rrset.update(soa)
    rrset.ttl = ttl
    resp.authority.append(rrset)


def _policy_rrset(name: dns.name.Name, qtype: int, res: Resolved) -> dns.rrset.RRset | None:
    types = (A, AAAA) if qtype == ANY else (qtype,)
    for t in types:
        addrs = res.addresses.get(t)
        if addrs:
            return dns.rrset.from_text_list(name, res.ttl, dns.rdataclass.IN, t, addrs)
    return None


def build(query: dns.message.Message, zones: ZoneSet, resolve: Resolve, *, tcp: bool,
          max_payload: int) -> Built:  # fmt: skip
    resp = dns.message.make_response(query, our_payload=max_payload)
    resp.flags &= ~dns.flags.AA
    ecs: dns.edns.ECSOption | None = None
    for opt in query.options:
        if isinstance(opt, dns.edns.ECSOption):
            ecs = opt
    if query.edns > 0:
        resp.set_rcode(dns.rcode.BADVERS)
        return _render(resp, query, ecs, tcp, max_payload, None, None)
    if query.opcode() != dns.opcode.QUERY:
        resp.set_rcode(dns.rcode.NOTIMP)
        return _render(resp, query, ecs, tcp, max_payload, None, None)
    if len(query.question) != 1 or (ecs is not None and ecs.scopelen != 0):
        resp.set_rcode(dns.rcode.FORMERR)
        return _render(resp, query, None, tcp, max_payload, None, None)  # a bad ECS is not echoed
    q = query.question[0]
    if dns.rdatatype.is_metatype(q.rdtype) and q.rdtype != ANY:
        # OPT, TSIG as a question, zone transfers: not served here
        resp.set_rcode(dns.rcode.REFUSED if q.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
                       else dns.rcode.FORMERR)  # fmt: skip
        return _render(resp, query, ecs, tcp, max_payload, None, None)
    zone = zones.find(q.name) if q.rdclass == dns.rdataclass.IN else None
    if zone is None:
        resp.set_rcode(dns.rcode.REFUSED)
        return _render(resp, query, ecs, tcp, max_payload, None, None)
    resp.flags |= dns.flags.AA
    name, qtype = q.name, q.rdtype
    resolved: Resolved | None = None
    region: str | None = None
    for _ in range(MAX_CHAIN):
        node = zone.nodes.get(name)
        if node is None:
            if not zone.exists(name):
                resp.set_rcode(dns.rcode.NXDOMAIN)
            _negative(resp, zone)
            break
        if node.policy is not None:
            resolved, region = resolve(node.policy, ecs)
            if not resolved.decision.datacenters:
                resp.set_rcode(dns.rcode.SERVFAIL)
                resp.flags &= ~dns.flags.AA
                break
            rrset = _policy_rrset(name, qtype, resolved)
            if rrset is None:
                _negative(resp, zone)
            else:
                resp.answer.append(rrset)
            break
        rrset = node.rrsets.get(qtype)
        if rrset is None and qtype == ANY and node.rrsets:
            rrset = next(iter(node.rrsets.values()))  # RFC 8482: one RRset is enough
        if rrset is not None:
            resp.answer.append(rrset)
            break
        cname = node.rrsets.get(CNAME)
        if cname is None:
            _negative(resp, zone)
            break
        resp.answer.append(cname)
        name = cname[0].target
        next_zone = zones.find(name)
        if next_zone is None:
            break  # out of our zones: the resolver follows it
        zone = next_zone
    return _render(resp, query, ecs, tcp, max_payload, resolved, region)


def _render(resp: dns.message.Message, query: dns.message.Message, ecs: dns.edns.ECSOption | None,
            tcp: bool, max_payload: int, resolved: Resolved | None, region: str | None) -> Built:  # fmt: skip
    if query.edns >= 0:
        options: list[dns.edns.Option] = []
        if ecs is not None:
            scope = resolved.scope if resolved is not None else 0
            options.append(dns.edns.ECSOption(ecs.address, ecs.srclen, scope))
        rcode = resp.rcode()
        # DO is copied (RFC 3225); other EDNS flags we do not know are not (RFC 6891)
        resp.use_edns(0, query.ednsflags & dns.flags.DO, max_payload, options=options)
        resp.set_rcode(rcode)  # use_edns resets the extended rcode bits (BADVERS lives there)
    limit = 65535 if tcp else udp_limit(query, max_payload)
    try:
        wire = resp.to_wire(max_size=limit, want_shuffle=False)
    except dns.exception.TooBig:
        resp.answer.clear()
        resp.authority.clear()
        resp.additional.clear()
        resp.flags |= dns.flags.TC
        wire = resp.to_wire(max_size=limit, want_shuffle=False)
    return Built(wire, resp.rcode(), resolved, region)
