"""The geo-DNS server's config model (`geodns.toml`), validated with pydantic.

    listen = "127.0.0.1:5353"            # UDP and TCP, same port (restart)
    admin = { address = "127.0.0.1:9053" }
    fail_open = true                     # every DC down: answer with all of them

    [regions]                            # client network -> region
    networks = { "127.0.0.2/32" = "east", "10.0.0.0/8" = "west" }
    mmdb = "/path/GeoLite2-City.mmdb"    # optional; the CIDR table wins when both match
    mmdb_field = "continent.code"        # dotted path in the record
    mmdb_regions = { NA = "east", EU = "west" }

    [datacenters.east]
    addresses = ["192.0.2.10", "2001:db8::10"]
    health = [{ type = "http", url = "http://127.0.0.1:8080/healthz" }]

    [[zones]]
    origin = "example.test."
    soa = { mname = "ns1.example.test.", rname = "hostmaster.example.test." }
    ns = ["ns1.example.test."]
    records = [{ name = "ns1", type = "A", value = "127.0.0.1" }]
    names = [{ name = "www", policy = "geo", datacenters = ["east", "west"] }]

Fields marked `restart` cannot change on SIGHUP reload.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from pydantic import AfterValidator, Field, field_validator, model_validator

from proxy.core.config import Address, AdminTlsConfig, AdminTokenConfig, StrictModel, admin_exposure_error, parse_hostport

__all__ = [
    "AdminConfig", "DataCenterConfig", "GeoDnsConfig", "HealthConfig", "HealthTarget",
    "NameConfig", "RecordConfig", "RegionRule", "RegionsConfig", "SoaConfig", "ZoneConfig",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT", "MX", "NS")




def _abs_name(value: str) -> str:
    try:
        name = dns.name.from_text(value)
    except Exception as exc:  # dnspython raises several kinds for a bad name
        raise ValueError(f"{value!r} is not a domain name: {exc}") from None
    return name.to_text()


DomainName = Annotated[str, AfterValidator(_abs_name)]


class AdminConfig(AdminTokenConfig):
    # token_file: bearer token for POST (drain/undrain/reload); re-read on reload
    address: Address = "127.0.0.1:9053"  # restart
    # TLS on the admin port (restart to change); needed, with client certificates or a token, for an
    # address beyond loopback (the token is then asked of reads too), as the lb's.
    tls: AdminTlsConfig | None = None


class HealthTarget(StrictModel):
    """One thing that must be healthy for its data center to be: all of a DC's targets must pass."""

    type: Literal["http", "tcp", "lb_status"]
    url: str | None = None  # http, lb_status: http://host:port/path
    address: Address | None = None  # tcp: host:port
    # lb_status: the share of a `tierproxy lb`'s backends that must be up (0..1)
    min_healthy: float = Field(default=0.5, ge=0, le=1)
    expect_status: list[int] = Field(default_factory=lambda: [200])

    @model_validator(mode="after")
    def _fields(self) -> HealthTarget:
        if self.type == "tcp":
            if self.address is None:
                raise ValueError("address: a tcp target needs address = 'host:port'")
        else:
            if self.url is None:
                raise ValueError(f"url: a {self.type} target needs url = 'http://host:port/path'")
            m = re.match(r"^http://([^/]+)(/.*)?$", self.url)
            if m is None:
                raise ValueError(f"url: {self.url!r}: expected http://host:port/path")
            parse_hostport(m.group(1))
        return self

    def host_port_path(self) -> tuple[str, int, str]:
        if self.type == "tcp":
            assert self.address is not None
            return (*parse_hostport(self.address), "")
        assert self.url is not None
        m = re.match(r"^http://([^/]+)(/.*)?$", self.url)
        assert m is not None
        return (*parse_hostport(m.group(1)), m.group(2) or "/")


class HealthConfig(StrictModel):
    interval: float = Field(default=2.0, gt=0, le=3600)  # seconds between checks of a target
    timeout: float = Field(default=1.0, gt=0, le=600)
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout {self.timeout} must not exceed interval {self.interval}")
        return self


class DataCenterConfig(StrictModel):
    addresses: list[str] = Field(min_length=1)  # IPv4 -> A, IPv6 -> AAAA
    health: list[HealthTarget] = Field(default_factory=list)  # none: always healthy

    @field_validator("addresses")
    @classmethod
    def _addrs(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address") from None
        return v


class RegionsConfig(StrictModel):
    networks: dict[str, str] = Field(default_factory=dict)  # CIDR -> region
    mmdb: str | None = None  # MaxMind database (restart not needed: re-opened on reload)
    mmdb_field: str = "country.iso_code"
    mmdb_regions: dict[str, str] = Field(default_factory=dict)  # field value -> region; else as is
    default: str | None = None  # region of clients nothing matches

    @field_validator("networks")
    @classmethod
    def _cidrs(cls, v: dict[str, str]) -> dict[str, str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r}: {exc}") from None
        return v

    @field_validator("mmdb")
    @classmethod
    def _mmdb(cls, v: str | None) -> str | None:
        if v is not None:
            import maxminddb

            try:
                maxminddb.open_database(v).close()
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot open {v}: {exc}") from None
        return v


class RegionRule(StrictModel):
    """A region's answer for a geo name: DCs in fallback order, optionally weighted first."""

    datacenters: list[str] = Field(default_factory=list)
    weights: dict[str, int] = Field(default_factory=dict)  # split among these while any is up


class NameConfig(StrictModel):
    """A name answered by policy with the addresses of data centers."""

    name: str  # relative to the zone, or "@"
    policy: Literal["geo", "weighted", "failover"]
    ttl: int = Field(default=60, ge=0, le=86400)
    drain_ttl: int = Field(default=5, ge=0, le=86400)  # while any of its DCs drains
    datacenters: list[str] = Field(default_factory=list)  # failover/fallback order
    weights: dict[str, int] = Field(default_factory=dict)  # weighted (and geo's default region)
    regions: dict[str, RegionRule] = Field(default_factory=dict)  # geo

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        for dc, w in v.items():
            if not 0 <= w <= 10000:
                raise ValueError(f"weight of {dc!r}: {w} out of range 0..10000")
        if v and sum(v.values()) == 0:
            raise ValueError("weights must not all be 0")
        return v

    @model_validator(mode="after")
    def _shape(self) -> NameConfig:
        if self.policy == "weighted" and not self.weights:
            raise ValueError("weights: policy 'weighted' needs weights = { dc = share, ... }")
        if self.policy == "failover" and not self.datacenters:
            raise ValueError("datacenters: policy 'failover' needs datacenters = [primary, backups...]")
        if self.policy == "geo" and not (self.regions or self.datacenters):
            raise ValueError("regions: policy 'geo' needs regions (and datacenters as the default order)")
        return self


class RecordConfig(StrictModel):
    name: str  # relative to the zone, "@" for the apex, or absolute with a trailing dot
    type: Literal["A", "AAAA", "CNAME", "TXT", "MX", "NS"]
    value: str  # presentation format: "192.0.2.1", "10 mail.example.", "\"text\""
    ttl: int | None = Field(default=None, ge=0, le=604800)

    @model_validator(mode="after")
    def _value(self) -> RecordConfig:
        try:
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(self.type), self.value)
        except Exception as exc:
            raise ValueError(f"value: {self.value!r} is not a valid {self.type} record: {exc}") from None
        return self


class SoaConfig(StrictModel):
    mname: DomainName
    rname: DomainName
    serial: int = Field(default=1, ge=0, le=2**32 - 1)
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    minimum: int = Field(default=60, ge=0, le=86400)  # negative-answer TTL (RFC 2308)


class ZoneConfig(StrictModel):
    origin: DomainName
    ttl: int = Field(default=300, ge=0, le=604800)  # default record TTL
    soa: SoaConfig
    ns: list[DomainName] = Field(min_length=1)
    records: list[RecordConfig] = Field(default_factory=list)
    names: list[NameConfig] = Field(default_factory=list)


class GeoDnsConfig(StrictModel):
    listen: Address = "127.0.0.1:5353"  # restart
    admin: AdminConfig = Field(default_factory=AdminConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(default=1, ge=1, le=64)  # restart
    fail_open: bool = True  # every data center of a name down: answer with all of them
    max_udp_payload: int = Field(default=1232, ge=512, le=4096)  # our EDNS buffer size
    # A client's network for weighted decisions and ECS scope when the source address is used
    client_prefix_v4: int = Field(default=24, ge=8, le=32)
    client_prefix_v6: int = Field(default=56, ge=16, le=128)
    tcp_idle_timeout: float = Field(default=10.0, gt=0, le=3600)
    drain_timeout: float = Field(default=5.0, ge=0, le=600)
    cache_size: int = Field(default=100000, ge=0)  # wire answers kept
    health: HealthConfig = Field(default_factory=HealthConfig)
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    datacenters: dict[str, DataCenterConfig] = Field(default_factory=dict)
    zones: list[ZoneConfig] = Field(min_length=1)

    @field_validator("datacenters")
    @classmethod
    def _dc_names(cls, v: dict[str, DataCenterConfig]) -> dict[str, DataCenterConfig]:
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(f"data center name {name!r} must match {_NAME}")
        return v

    @model_validator(mode="after")
    def _refs(self) -> GeoDnsConfig:
        if parse_hostport(self.listen) == parse_hostport(self.admin.address):
            raise ValueError("listen and admin.address must differ")
        exposed = admin_exposure_error(self.admin.address, self.admin.tls, self.admin.token_file)
        if exposed is not None:
            raise ValueError(exposed)  # anyone who reaches it could drain data centers
        origins = [z.origin.lower() for z in self.zones]
        for o in origins:
            if origins.count(o) > 1:
                raise ValueError(f"zones: origin {o} appears twice")
        from proxy.geodns.zones import Zone  # zones builds on this module's models

        for zi, zone in enumerate(self.zones):
            try:
                Zone(zone)
            except ValueError as exc:
                raise ValueError(f"zones[{zi}]: {exc}") from None
            for ni, n in enumerate(zone.names):
                where = f"zones[{zi}].names[{ni}]"
                dcs = list(n.datacenters) + list(n.weights)
                for region, rule in n.regions.items():
                    dcs += list(rule.datacenters) + list(rule.weights)
                    if rule.weights and sum(rule.weights.values()) == 0:
                        raise ValueError(f"{where}.regions.{region}.weights: must not all be 0")
                for dc in dcs:
                    if dc not in self.datacenters:
                        raise ValueError(f"{where}: no data center named {dc!r}")
        return self
