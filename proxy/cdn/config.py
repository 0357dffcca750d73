"""`tierproxy cdn` configuration (TOML, validated by pydantic with located errors).

    listen = "127.0.0.1:8088"
    origins = ["127.0.0.1:8080"]     # shorthand for [[origin.servers]] named o1, o2, ...
    [origin]                         # the origin pool (proxy/cdn/originpool.py)
    health = { type = "tcp", interval = 2.0, timeout = 1.0, rise = 2, fall = 3 }   # as the lb's
    max_idle = 64                    # idle keep-alive connections kept per origin server
    [[origin.servers]]               # instead of `origins`
    name = "a"
    address = "127.0.0.1:8080"
    admin = { address = "127.0.0.1:9088" }   # token_file = "...", allowed_hosts = [...], tls = {...}
    [cache]
    max_bytes = 67108864             # the store's bound: bodies + headers + per-object overhead
    policy = "lru"                   # lru | lfu | fifo | wtinylfu
    max_object_bytes = 8388608       # larger responses are passed through, not stored
    versioned_pattern = '[.][0-9a-f]{8,}[.](css|js|png|svg|woff2)$'   # content-hash paths
    versioned_ttl = 31536000         # ... get this max-age and `immutable`
    trace_file = "cdn.trace"         # record a key trace for `tierproxy cdn whatif` (optional)
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.cdn.versioned import compile_pattern
from proxy.core.config import Address, AdminTlsConfig, AdminTokenConfig, StrictModel, admin_exposure_error, parse_hostport
from proxy.upstream.config import BackendConfig, HealthConfig

__all__ = ["AdminConfig", "CacheConfig", "CdnConfig", "OriginConfig"]


class AdminConfig(AdminTokenConfig):
    """The admin API (/status, /metrics, POST /purge, POST /trace); token_file (purges need its bearer
    token when set) and allowed_hosts come from AdminTokenConfig (proxy/core/adminguard.py)."""

    address: Address = "127.0.0.1:9088"  # restart
    # TLS on the admin port (restart to change); needed, with client certificates or a token, for an
    # address beyond loopback (the token is then asked of reads too), as the lb's.
    tls: AdminTlsConfig | None = None


class CacheConfig(StrictModel):
    max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    policy: Literal["lru", "lfu", "fifo", "wtinylfu"] = "lru"
    max_object_bytes: int = Field(8 * 1024 * 1024, ge=1)
    # RFC 9111 4.2.2 heuristic freshness: this fraction of (Date - Last-Modified), at most this long.
    heuristic_fraction: float = Field(0.1, ge=0, le=1)
    heuristic_max: float = Field(86400.0, ge=0)
    name: str = Field("tierproxy", pattern=r"^[A-Za-z][A-Za-z0-9._-]*$")  # Cache-Status cache name
    # Paths matching this regular expression (searched in the path, not the query) carry a content
    # hash: their 200 responses are stored for versioned_ttl seconds and sent `immutable`.
    versioned_pattern: str | None = None
    versioned_ttl: int = Field(31536000, ge=1, le=2147483648)
    # Record every lookup's key and size to this file (appended) for `tierproxy cdn whatif`;
    # the admin API can also start and stop a recording (POST /trace).
    trace_file: str | None = None

    @field_validator("versioned_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("an empty pattern would match every path")
            try:
                compile_pattern(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _default_origin_health() -> HealthConfig:
    # A TCP connect by default: any origin answers it, while an HTTP check needs a path it serves.
    return HealthConfig(type="tcp")


class OriginConfig(StrictModel):
    """The origin pool: servers (the lb's BackendConfig: name, address, weight, backup) with the
    lb's active health checks (proxy/upstream/)."""

    servers: list[BackendConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=_default_origin_health)
    max_idle: int = Field(64, ge=0)  # idle keep-alive connections kept per origin server
    idle_timeout: float = Field(30.0, gt=0)  # an idle keep-alive connection is closed after this

    @model_validator(mode="after")
    def _unique(self) -> OriginConfig:
        names = [s.name for s in self.servers]
        addrs = [s.address for s in self.servers]
        for what, values in (("names", names), ("addresses", addrs)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate server {what}: {', '.join(dupes)}")
        return self


class CdnConfig(StrictModel):
    listen: Address = "127.0.0.1:8088"  # restart
    # Shorthand for [[origin.servers]] named o1, o2, ... (give one or the other).
    origins: list[Address] = Field(default_factory=list)
    origin: OriginConfig = Field(default_factory=OriginConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    origin_connect_timeout: float = Field(2.0, gt=0)
    origin_timeout: float = Field(30.0, gt=0)
    client_idle_timeout: float = Field(60.0, gt=0)
    drain_timeout: float = Field(10.0, ge=0)
    # Processes serving `listen` (SO_REUSEPORT), each with its own store, under one supervisor
    # that serves the admin port; restart to change.
    workers: int = Field(1, ge=1, le=64)
    log_level: str = "info"

    @model_validator(mode="after")
    def _distinct(self) -> CdnConfig:
        if parse_hostport(self.listen) == parse_hostport(self.admin.address):
            raise ValueError("listen and admin.address must differ")
        exposed = admin_exposure_error(self.admin.address, self.admin.tls, self.admin.token_file)
        if exposed is not None:
            raise ValueError(exposed)
        if self.workers > 1 and self.cache.trace_file:
            raise ValueError("cache.trace_file: trace recording needs workers = 1 (one process sees every request)")
        if bool(self.origins) == bool(self.origin.servers):
            raise ValueError("origins: give either origins or [[origin.servers]] (one of them, not both)")
        return self

    @property
    def origin_servers(self) -> list[BackendConfig]:
        """The origin pool's servers, from [[origin.servers]] or the `origins` shorthand."""
        if self.origin.servers:
            return self.origin.servers
        return [BackendConfig(name=f"o{i + 1}", address=a) for i, a in enumerate(self.origins)]
