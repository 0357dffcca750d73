"""Client network -> region: a CIDR table (longest prefix wins), then a MaxMind .mmdb database.

`RegionTable.lookup(family, addr_int, source_len)` returns `(region, prefix_len)`: the region of
the client network and how many leading bits of the address that answer depends on (the ECS scope
prefix, RFC 7871). The table is a dict per prefix length, tried longest first: a handful of
lengths in a real table, so a lookup is a few masks and dict probes. Pure apart from reading the
.mmdb file at construction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

__all__ = ["RegionTable", "client_network"]


def client_network(family: int, addr: int, prefix: int) -> int:
    """The address with all but its first `prefix` bits cleared (family 1: IPv4, 2: IPv6)."""
    bits = 32 if family == 1 else 128
    if prefix >= bits:
        return addr
    return addr & (((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1))


def _field(record: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


class RegionTable:
    def __init__(self, networks: Mapping[str, str], mmdb: str | None = None,
                 mmdb_field: str = "country.iso_code", mmdb_regions: Mapping[str, str] | None = None,
                 default: str | None = None) -> None:  # fmt: skip
        # family -> [(prefix_len, {network_int: region})], longest prefix first
        tables: dict[int, dict[int, dict[int, str]]] = {1: {}, 2: {}}
        for cidr, region in networks.items():
            net = ipaddress.ip_network(cidr)
            fam = 1 if net.version == 4 else 2
            tables[fam].setdefault(net.prefixlen, {})[int(net.network_address)] = region
        self._tables = {fam: sorted(t.items(), reverse=True) for fam, t in tables.items()}
        self.default = default
        self.mmdb_field = mmdb_field
        self.mmdb_regions = dict(mmdb_regions or {})
        self._reader: Any = None
        if mmdb is not None:
            import maxminddb

            self._reader = maxminddb.open_database(mmdb)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def lookup(self, family: int, addr: int, source_len: int) -> tuple[str | None, int]:
        """(region or None, scope prefix length) for a client address known to `source_len` bits."""
        for plen, nets in self._tables[family]:
            region = nets.get(client_network(family, addr, plen))
            if region is not None:
                return region, plen
        if self._reader is not None:
            ip = ipaddress.IPv4Address(addr) if family == 1 else ipaddress.IPv6Address(addr)
            try:
                record, plen = self._reader.get_with_prefix_len(ip)
            except ValueError:  # an IPv6 address in an IPv4-only database
                record, plen = None, 0
            if record is not None:
                value = _field(record, self.mmdb_field)
                if value is not None:
                    return self.mmdb_regions.get(str(value), str(value)), min(plen, source_len)
        # Nothing matched: the answer holds for the whole network the client told us about.
        return self.default, source_len

    def describe(self, family: int, addr: int, source_len: int) -> str:
        """Why `lookup` says what it says (for /explain)."""
        for plen, nets in self._tables[family]:
            net = client_network(family, addr, plen)
            region = nets.get(net)
            if region is not None:
                ip = ipaddress.ip_address(net) if family == 1 else ipaddress.IPv6Address(net)
                return f"in {ip}/{plen} of regions.networks -> region {region}"
        if self._reader is not None:
            region, plen = self.lookup(family, addr, source_len)
            if region is not None and region != self.default:
                return f"MaxMind database: {self.mmdb_field} -> region {region} (/{plen})"
        return f"no network matched -> default region {self.default}"
