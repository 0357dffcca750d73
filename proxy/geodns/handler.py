"""The pure query handler: wire query + client address in, wire response (or None: drop) out.

`Engine` holds one immutable view of config (zones, regions, data centers) plus the data centers'
availability (health and drain), and answers:

1. the fast path: `cache.parse_query` reads a simple query by hand, the client's network and
   region are looked up, the policy decision is taken (memoised per client network), and a cached
   wire answer for that key is patched and returned; dnspython is not touched;
2. a miss or anything unusual: dnspython parses (FORMERR on failure, dropped when too short or a
   response), `answer.build` builds, and a fast-path key stores the result.

Any exception while answering is our bug: logged, answered SERVFAIL, and the server goes on.
Counters are plain ints by label value (labels from config or fixed sets, never client input).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype

from proxy.geodns.answer import Built, Resolved, build, formerr
from proxy.geodns.cache import AnswerCache, FastQuery, parse_query, patch
from proxy.geodns.config import GeoDnsConfig, NameConfig
from proxy.geodns.policy import decide, name_datacenters
from proxy.geodns.regions import RegionTable, client_network
from proxy.geodns.zones import ZoneSet

__all__ = ["Engine", "QTYPE_LABELS", "RCODE_LABELS"]

log = logging.getLogger("tierproxy.geodns")

QTYPE_LABELS = {int(dns.rdatatype.from_text(t)): t for t in
                ("A", "AAAA", "CNAME", "TXT", "MX", "NS", "SOA", "ANY", "PTR", "SRV", "HTTPS", "DS", "DNSKEY")}  # fmt: skip
RCODE_LABELS = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
                16: "BADVERS"}  # fmt: skip
MEMO_SIZE = 65536


class Engine:
    def __init__(self, cfg: GeoDnsConfig, regions: RegionTable | None = None) -> None:
        self.cfg = cfg
        self.zones = ZoneSet(cfg.zones)
        self.regions = regions or RegionTable(
            cfg.regions.networks, cfg.regions.mmdb, cfg.regions.mmdb_field, cfg.regions.mmdb_regions,
            cfg.regions.default)  # fmt: skip
        self.cache = AnswerCache(cfg.cache_size)
        self.healthy: dict[str, bool] = {dc: True for dc in cfg.datacenters}
        self.drained: set[str] = set()
        self.available: frozenset[str] = frozenset(cfg.datacenters)
        self._memo: dict[Any, tuple[Resolved, str | None]] = {}
        self._src: dict[str, tuple[int, int]] = {}
        # (query less its ID, source, tcp) -> (answer less its ID, and its counter labels)
        self._repeat: dict[Any, tuple[bytes, str, str, str | None, tuple[str, ...]]] = {}
        # counters
        self.queries: dict[str, int] = {}
        self.rcodes: dict[str, int] = {}
        self.by_region: dict[str, int] = {}
        self.by_dc: dict[str, int] = {}
        self.dropped = 0
        self.errors = 0

    # -- state -----------------------------------------------------------------------------

    def set_state(self, healthy: Mapping[str, bool], drained: Iterable[str]) -> None:
        """New health/drain view: answers change, so the cache and decisions start afresh."""
        self.healthy = {dc: bool(healthy.get(dc, True)) for dc in self.cfg.datacenters}
        self.drained = {dc for dc in drained if dc in self.cfg.datacenters}
        self.available = frozenset(dc for dc, up in self.healthy.items() if up and dc not in self.drained)
        self._memo.clear()
        self._repeat.clear()
        self.cache.clear()

    # -- decisions -------------------------------------------------------------------------

    def _client(self, src: str) -> tuple[int, int]:
        c = self._src.get(src)
        if c is None:
            ip = ipaddress.ip_address(src)
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            c = (1 if ip.version == 4 else 2, int(ip))
            if len(self._src) > MEMO_SIZE:
                self._src.clear()
            self._src[src] = c
        return c

    def resolve(self, pol: NameConfig, family: int, addr: int, srclen: int) -> tuple[Resolved, str | None]:
        """The answer a policy name gives a client network (memoised until state changes)."""
        key = (id(pol), family, addr, srclen)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        region, scope = self.regions.lookup(family, addr, srclen)
        netlen = min(srclen, self.cfg.client_prefix_v4 if family == 1 else self.cfg.client_prefix_v6)
        net = client_network(family, addr, netlen)
        network = bytes((family, netlen)) + net.to_bytes(4 if family == 1 else 16, "big")
        decision = decide(pol, region, network, self.available, self.cfg.fail_open)
        if decision.per_client:
            scope = max(scope, netlen)
        addresses: dict[int, list[str]] = {dns.rdatatype.A: [], dns.rdatatype.AAAA: []}
        for dc in decision.datacenters:
            for a in self.cfg.datacenters[dc].addresses:
                t = dns.rdatatype.AAAA if ":" in a else dns.rdatatype.A
                if a not in addresses[t]:
                    addresses[t].append(a)
        draining = any(dc in self.drained for dc in name_datacenters(pol))
        resolved = Resolved(decision, addresses, pol.drain_ttl if draining else pol.ttl, scope)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = (resolved, region)
        return resolved, region

    def explain(self, client: str) -> dict[str, Any]:
        """What each policy name answers a client network (an address or a CIDR) and why."""
        net = ipaddress.ip_network(client, strict=False)
        family = 1 if net.version == 4 else 2
        full = 32 if family == 1 else 128
        srclen = net.prefixlen if net.prefixlen < full else (
            self.cfg.client_prefix_v4 if family == 1 else self.cfg.client_prefix_v6)  # fmt: skip
        addr = client_network(family, int(net.network_address), srclen)
        region, _ = self.regions.lookup(family, addr, srclen)
        names = {}
        for name, pol in self.zones.policies():
            res, _ = self.resolve(pol, family, addr, srclen)
            names[name.to_text()] = {
                "policy": pol.policy, "datacenters": list(res.decision.datacenters),
                "addresses": res.addresses[dns.rdatatype.A] + res.addresses[dns.rdatatype.AAAA],
                "ttl": res.ttl, "ecs_scope": res.scope, "why": res.decision.reason,
            }  # fmt: skip
        return {
            "client": client, "network": f"{ipaddress.ip_address(addr) if family == 1 else ipaddress.IPv6Address(addr)}/{srclen}",
            "region": region, "region_why": self.regions.describe(family, addr, srclen),
            "available": sorted(self.available), "drained": sorted(self.drained), "names": names,
        }  # fmt: skip

    # -- answering -------------------------------------------------------------------------

    def handle(self, wire: bytes, src: str, tcp: bool) -> bytes | None:
        # A query repeated byte for byte (but its ID) from the same source: the answer we gave it,
        # under its new ID. Resolvers and load generators repeat themselves; this skips even the
        # parse and the decision.
        rk = (wire[2:], src, tcp)
        hit = self._repeat.get(rk)
        if hit is not None:
            self.cache.hits += 1
            self._count_labels(hit[1], hit[2], hit[3], hit[4])
            return wire[:2] + hit[0]
        try:
            q = parse_query(wire)
            if q is not None:
                return self._fast(wire, q, src, tcp, rk)
            return self._slow(wire, src, tcp, None, None)
        except Exception:
            self.errors += 1
            log.exception("internal error answering a query")
            if len(wire) < 12 or wire[2] & 0x80:
                return None
            self._count_rcode(2)
            return wire[:2] + bytes(((wire[2] & 0x79) | 0x80, 2)) + b"\x00" * 8

    def _fast(self, wire: bytes, q: FastQuery, src: str, tcp: bool, rk: Any) -> bytes | None:
        lower = q.qname.lower()
        pol = self.zones.policy_wire.get(lower)
        res_key: Any = None
        resolved: Resolved | None = None
        region: str | None = None
        if pol is not None:
            if q.ecs_family:
                family, srclen = q.ecs_family, q.ecs_srclen
                width = 4 if family == 1 else 16
                addr = int.from_bytes(q.ecs_addr.ljust(width, b"\x00"), "big")
            else:
                family, addr = self._client(src)
                srclen = 32 if family == 1 else 128
            resolved, region = self.resolve(pol, family, addr, srclen)
            res_key = (resolved.decision.datacenters, resolved.ttl, resolved.scope)
        limit = 65535 if tcp else (min(max(512, q.payload), self.cfg.max_udp_payload) if q.edns else 512)
        key = (lower, q.qtype, q.qclass, wire[2:4], q.edns, q.do, limit, q.ecs_family, q.ecs_srclen, res_key)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.hits += 1
            self._count(q.qtype, hit[1], region, resolved)
            out: bytes | None = patch(hit[0], wire, q)
        else:
            self.cache.misses += 1
            out = self._slow(wire, src, tcp, key, (resolved, region) if pol is not None else None)
        if out is not None and self.cache.size > 0:
            if len(self._repeat) >= self.cache.size:
                self._repeat.clear()
            self._repeat[rk] = (out[2:], QTYPE_LABELS.get(q.qtype, "other"),
                                RCODE_LABELS.get(out[3] & 0x0F, "other"),
                                (region or "none") if resolved is not None else None,
                                resolved.decision.datacenters if resolved is not None else ())  # fmt: skip
        return out

    def _slow(self, wire: bytes, src: str, tcp: bool, key: Any,
              known: tuple[Resolved | None, str | None] | None) -> bytes | None:  # fmt: skip
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many kinds for malformed input
            out = formerr(wire)
            if out is None:
                self.dropped += 1
            else:
                self._count_rcode(dns.rcode.FORMERR)
            return out
        if query.flags & 0x8000:  # a response: never answer one
            self.dropped += 1
            return None

        def resolve(pol: NameConfig, ecs: dns.edns.ECSOption | None) -> tuple[Resolved, str | None]:
            if ecs is not None:
                ip = ipaddress.ip_address(ecs.address)
                family = 1 if ip.version == 4 else 2
                return self.resolve(pol, family, int(ip), ecs.srclen)
            family, addr = self._client(src)
            return self.resolve(pol, family, addr, 32 if family == 1 else 128)

        built: Built = build(query, self.zones, resolve, tcp=tcp, max_payload=self.cfg.max_udp_payload)
        qtype = query.question[0].rdtype if len(query.question) == 1 else -1
        self._count(qtype, built.rcode, built.region, built.resolved)
        if key is not None:
            self.cache.put(key, built.wire, built.rcode)
        return built.wire

    def _count_rcode(self, rcode: int) -> None:
        label = RCODE_LABELS.get(rcode, "other")
        self.rcodes[label] = self.rcodes.get(label, 0) + 1

    def _count_labels(self, qt: str, rc: str, region: str | None, dcs: tuple[str, ...]) -> None:
        self.queries[qt] = self.queries.get(qt, 0) + 1
        self.rcodes[rc] = self.rcodes.get(rc, 0) + 1
        if region is not None:
            self.by_region[region] = self.by_region.get(region, 0) + 1
        for dc in dcs:
            self.by_dc[dc] = self.by_dc.get(dc, 0) + 1

    def _count(self, qtype: int, rcode: int, region: str | None, resolved: Resolved | None) -> None:
        qt = QTYPE_LABELS.get(qtype, "other")
        self.queries[qt] = self.queries.get(qt, 0) + 1
        self._count_rcode(rcode)
        if resolved is not None:
            r = region or "none"
            self.by_region[r] = self.by_region.get(r, 0) + 1
            for dc in resolved.decision.datacenters:
                self.by_dc[dc] = self.by_dc.get(dc, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {"queries": dict(self.queries), "rcodes": dict(self.rcodes), "regions": dict(self.by_region),
                "datacenters": dict(self.by_dc), "dropped": self.dropped, "errors": self.errors,
                "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
                "cache_entries": len(self.cache)}  # fmt: skip
