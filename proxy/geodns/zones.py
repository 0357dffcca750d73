"""Zone data from config: SOA, NS and static records per name, plus the policy names.

`ZoneSet.find(qname)` gives the zone a name belongs to (longest origin), `Zone.lookup` what the
name holds: its static RRsets, its policy (a name answered with data centers' addresses), or
nothing. A name that does not exist (no records, no policy, no name below it) is NXDOMAIN; one
that exists without the asked type is NODATA (RFC 2308: both with the SOA in the authority
section). Names are dnspython `Name`s, whose hash and equality ignore case.

`ZoneSet.policy_wire` maps each name's lowercased wire form to the policy that decides its answer,
following in-zone CNAMEs (`www CNAME app`, `app` by policy): the server's cache needs the decision
before it builds anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from proxy.geodns.config import NameConfig, ZoneConfig

__all__ = ["Node", "Zone", "ZoneSet"]

IN = dns.rdataclass.IN


@dataclass
class Node:
    rrsets: dict[int, dns.rrset.RRset] = field(default_factory=dict)  # rdtype -> RRset
    policy: NameConfig | None = None


def _name(text: str, origin: dns.name.Name) -> dns.name.Name:
    if text == "@":
        return origin
    return dns.name.from_text(text, origin)


class Zone:
    def __init__(self, cfg: ZoneConfig) -> None:
        self.cfg = cfg
        self.origin = dns.name.from_text(cfg.origin)
        self.nodes: dict[dns.name.Name, Node] = {}
        soa = cfg.soa
        self._add(self.origin, "SOA", f"{soa.mname} {soa.rname} {soa.serial} {soa.refresh} "
                                      f"{soa.retry} {soa.expire} {soa.minimum}", cfg.ttl)  # fmt: skip
        for ns in cfg.ns:
            self._add(self.origin, "NS", ns, cfg.ttl)
        for rec in cfg.records:
            self._add(_name(rec.name, self.origin), rec.type, rec.value,
                      cfg.ttl if rec.ttl is None else rec.ttl)  # fmt: skip
        for pol in cfg.names:
            name = _name(pol.name, self.origin)
            node = self.nodes.setdefault(name, Node())
            if node.rrsets:
                raise ValueError(f"{name}: a policy name cannot also hold records")
            node.policy = pol
        # Empty non-terminals exist (NODATA, not NXDOMAIN): "b.example." when "a.b.example." does.
        self.existing: set[dns.name.Name] = set()
        for name in self.nodes:
            while name != self.origin and name.is_subdomain(self.origin):
                self.existing.add(name)
                name = name.parent()
        self.existing.add(self.origin)
        self.soa = self.nodes[self.origin].rrsets[dns.rdatatype.SOA]
        self.ns = self.nodes[self.origin].rrsets[dns.rdatatype.NS]

    def _add(self, name: dns.name.Name, rdtype: str, value: str, ttl: int) -> None:
        if not name.is_subdomain(self.origin):
            raise ValueError(f"{name} is not in zone {self.origin}")
        t = dns.rdatatype.from_text(rdtype)
        node = self.nodes.setdefault(name, Node())
        if node.policy is not None:
            raise ValueError(f"{name}: a policy name cannot also hold records")
        rrset = node.rrsets.get(t)
        if rrset is None:
            rrset = node.rrsets[t] = dns.rrset.RRset(name, IN, t)
        rrset.add(dns.rdata.from_text(IN, t, value, origin=self.origin, relativize=False), ttl)
        if dns.rdatatype.CNAME in node.rrsets and len(node.rrsets) > 1:
            raise ValueError(f"{name}: a CNAME cannot sit beside other records (RFC 1034)")

    def exists(self, name: dns.name.Name) -> bool:
        return name in self.existing


class ZoneSet:
    def __init__(self, cfgs: list[ZoneConfig]) -> None:
        self.zones = [Zone(c) for c in cfgs]
        # Longest origin first so that a child zone wins over its parent.
        self.zones.sort(key=lambda z: len(z.origin), reverse=True)
        self.policy_wire: dict[bytes, NameConfig] = {}
        for zone in self.zones:
            for name in zone.nodes:
                pol = self._policy_via_cnames(name)
                if pol is not None:
                    self.policy_wire[name.to_wire().lower()] = pol

    def find(self, qname: dns.name.Name) -> Zone | None:
        for zone in self.zones:
            if qname.is_subdomain(zone.origin):
                return zone
        return None

    def node(self, name: dns.name.Name) -> Node | None:
        zone = self.find(name)
        return None if zone is None else zone.nodes.get(name)

    def _policy_via_cnames(self, name: dns.name.Name) -> NameConfig | None:
        for _ in range(8):  # a CNAME chain longer than this is answered as far as it goes
            node = self.node(name)
            if node is None:
                return None
            if node.policy is not None:
                return node.policy
            cname = node.rrsets.get(dns.rdatatype.CNAME)
            if cname is None:
                return None
            name = cname[0].target
        return None

    def policies(self) -> list[tuple[dns.name.Name, NameConfig]]:
        return [(n, node.policy) for z in self.zones for n, node in z.nodes.items()
                if node.policy is not None]  # fmt: skip
