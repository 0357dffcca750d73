"""The load balancer's config model (`lb.toml`), validated with pydantic.

Every field has its default and unit beside it. Fields marked `restart` cannot change on SIGHUP
reload (the listener and admin sockets are bound once); the reload refuses a config that changes them.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.core.config import Address, AdminTokenConfig, StrictModel, admin_exposure_error, parse_hostport
from proxy.lb.frontconfig import AdminTlsConfig, BackendTlsConfig, ListenerConfig, RouteConfig
from proxy.lb.netpolicy import Network, host_refusal, parse_networks
from proxy.lb.ocspcheck import ocsp_warnings
from proxy.upstream.config import BackendConfig, HealthConfig

__all__ = [
    "Address",
    "AdminConfig",
    "BackendConfig",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LbConfig",
    "OutlierConfig",
    "PoolConfig",
    "RouteConfig",
    "StickyConfig",
    "TimeoutsConfig",
]

ALGORITHMS = ("round_robin", "weighted_round_robin", "least_conn", "random_two", "consistent_hash")



_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class OutlierConfig(StrictModel):
    """Passive outlier detection: consecutive connect failures, resets, timeouts and 5xx eject."""

    enabled: bool = True
    consecutive_failures: int = Field(default=5, ge=1, le=10000)
    base_ejection: float = Field(default=10.0, gt=0, le=86400)  # seconds, times the ejection count
    max_ejection: float = Field(default=300.0, gt=0, le=86400)  # seconds, cap of one ejection
    max_ejection_percent: int = Field(default=50, ge=0, le=100)  # never eject more than this share
    count_5xx: bool = True  # whether backend 5xx answers count as failures


class StickyConfig(StrictModel):
    cookie: str = Field(default="tp_backend", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    secret: str = Field(min_length=16, description="HMAC key; same on every balancer instance")
    max_age: int | None = Field(default=None, ge=1)  # seconds; None = session cookie


class PoolConfig(StrictModel):
    algorithm: Literal[
        "round_robin", "weighted_round_robin", "least_conn", "random_two", "consistent_hash"
    ] = "weighted_round_robin"
    mode: Literal["stateless", "sticky"] = "stateless"
    # consistent_hash key: "client_ip", "header:<name>" or "cookie:<name>"
    hash_key: str = "client_ip"
    load_factor: float = Field(default=1.25, ge=1.0, le=10.0)  # bounded-load factor for hashing
    retries: int = Field(default=2, ge=0, le=10)  # extra attempts on other backends
    retry_non_idempotent: bool = False  # POST/PATCH are never retried unless this is set
    # When a backend goes down (health check or outlier ejection), requests waiting on it with no
    # response byte yet are re-sent to another backend when safe (idempotent, body still in the
    # retry buffer) and answered 502 otherwise ("redispatch"), or left to time out ("keep").
    on_marked_down: Literal["redispatch", "keep"] = "redispatch"
    sticky: StickyConfig | None = None
    tls: BackendTlsConfig | None = None  # TLS to this pool's backends
    # Send a PROXY protocol header (v1 text or v2 binary) with the client's address first on every
    # backend connection. Such connections carry one client: they are not pooled across clients.
    proxy_protocol: Literal["v1", "v2"] | None = None
    health: HealthConfig = Field(default_factory=HealthConfig)
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    backends: list[BackendConfig] = Field(default_factory=list)

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, v: str) -> str:
        kind, _, name = v.partition(":")
        if v == "client_ip":
            return v
        if kind in ("header", "cookie") and name and name.isascii() and " " not in name:
            return v
        raise ValueError(f"{v!r}: expected 'client_ip', 'header:<name>' or 'cookie:<name>'")

    @model_validator(mode="after")
    def _cross_checks(self) -> PoolConfig:
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate backend names: {', '.join(dupes)}")
        addrs = [b.address for b in self.backends]
        dup_addrs = sorted({a for a in addrs if addrs.count(a) > 1})
        if dup_addrs:
            raise ValueError(f"duplicate backend addresses: {', '.join(dup_addrs)}")
        if self.mode == "sticky" and self.sticky is None:
            raise ValueError("mode 'sticky' needs a [sticky] table with a secret")
        return self


class TimeoutsConfig(StrictModel):
    client_header: float = Field(default=10.0, gt=0)  # whole request head must arrive within (408)
    client_idle: float = Field(default=60.0, gt=0)  # keep-alive idle between requests
    connect: float = Field(default=3.0, gt=0)  # backend connect
    backend_response: float = Field(default=30.0, gt=0)  # request sent -> response head (504)
    backend_idle: float = Field(default=30.0, gt=0)  # pooled idle backend connection lifetime
    drain: float = Field(default=30.0, ge=0)  # SIGTERM: wait this long for in-flight requests


class LimitsConfig(StrictModel):
    max_client_connections: int = Field(default=10000, ge=1)
    max_header_bytes: int = Field(default=65536, ge=1024, le=1 << 20)  # 431 above
    max_body_bytes: int | None = Field(default=None, ge=0)  # 413 above; None = unlimited
    # Pooled keep-alive connections per backend. Below the concurrency a backend sees, every
    # response beyond the cap closes its connection and the next request opens one (churn: at
    # 512 clients, a cap of 64 halved throughput and put p99 at 0.5 s).
    max_idle_per_backend: int = Field(default=512, ge=0)
    retry_buffer_bytes: int = Field(default=65536, ge=0)  # request bodies up to this can be retried
    # A client that moves fewer bytes per second than this (request body in, response out),
    # averaged over the exchange once `min_rate_grace` seconds have passed, and is the one holding
    # things up (not reading, or sending its body slowly), is cut. 0 turns the check off.
    min_transfer_rate: int = Field(default=1024, ge=0)  # bytes/s
    min_rate_grace: float = Field(default=10.0, gt=0)  # seconds before the rate is judged
    # HTTP/2 streams open at once per client connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    h2_max_concurrent_streams: int = Field(default=100, ge=1, le=1000)
    # HTTP/2 receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE): request body bytes a client
    # may send ahead of our WINDOW_UPDATEs. Larger speeds uploads over long round trips; smaller
    # bounds what one stream can make us buffer. Above 65,535 the connection window grows too.
    h2_initial_window_size: int = Field(default=65535, ge=1024, le=(1 << 31) - 1)


class AdminConfig(AdminTokenConfig):
    """The admin API (proxy/core/adminguard.py says what it refuses and why); token_file and
    allowed_hosts come from AdminTokenConfig."""

    address: Address = "127.0.0.1:9080"  # restart
    # TLS on the admin port (restart to change); needed, with client certificates or a token,
    # for an address beyond loopback.
    tls: AdminTlsConfig | None = None


class LbConfig(StrictModel):
    # One plain-HTTP listener: shorthand for a single [[listeners]] entry named "default".
    listen: Address = "127.0.0.1:8080"  # restart
    listeners: list[ListenerConfig] = Field(default_factory=list)  # restart to add/remove/move
    admin: AdminConfig = Field(default_factory=AdminConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Processes serving `listen` (SO_REUSEPORT) under one supervisor; restart to change.
    workers: int = Field(default=1, ge=1, le=64)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    pools: dict[str, PoolConfig]
    routes: list[RouteConfig] = Field(default_factory=list)
    default_pool: str | None = None  # when no route matches; defaults to the only/first pool
    # Networks backend addresses (in this file or added through the admin API) must be in; None:
    # anything but link-local and unspecified addresses (lb/netpolicy.py).
    allowed_backend_networks: list[str] | None = None

    @field_validator("allowed_backend_networks")
    @classmethod
    def _networks(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            parse_networks(v)
        return v

    @property
    def backend_networks(self) -> tuple[Network, ...] | None:
        nets = self.allowed_backend_networks
        return None if nets is None else parse_networks(nets)

    @property
    def all_listeners(self) -> list[ListenerConfig]:
        """`[[listeners]]`, or the one plain listener `listen` stands for."""
        if self.listeners:
            return self.listeners
        return [ListenerConfig(name="default", address=self.listen)]

    def warnings(self) -> list[str]:
        """Things that are allowed but probably unwise (`tierproxy check-config` prints them): an
        `ocsp_response_file` that cannot be stapled (the certificate is served without)."""
        return ocsp_warnings(self.listeners, time.time())

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, v: dict[str, PoolConfig]) -> dict[str, PoolConfig]:
        import re

        if not v:
            raise ValueError("at least one pool")
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(f"pool name {name!r} must match {_NAME}")
        return v

    @model_validator(mode="after")
    def _refs(self) -> LbConfig:
        for i, route in enumerate(self.routes):
            if route.pool not in self.pools:
                raise ValueError(f"routes[{i}].pool: no pool named {route.pool!r}")
        if self.default_pool is not None and self.default_pool not in self.pools:
            raise ValueError(f"default_pool: no pool named {self.default_pool!r}")
        if self.listeners and "listen" in self.model_fields_set:
            raise ValueError("listen: give either listen or [[listeners]], not both")
        admin_at = parse_hostport(self.admin.address)
        names: set[str] = set()
        addresses: set[tuple[str, int]] = set()
        for i, lst in enumerate(self.all_listeners):
            where = f"listeners[{i}]" if self.listeners else "listen"
            at = parse_hostport(lst.address)
            if at == admin_at:
                raise ValueError(f"{where}: listen and admin.address must differ")
            if lst.name in names or at in addresses:
                raise ValueError(f"{where}: listener name and address must be unique")
            names.add(lst.name)
            addresses.add(at)
            for j, route in enumerate(lst.routes or ()):
                if route.pool not in self.pools:
                    raise ValueError(f"{where}.routes[{j}].pool: no pool named {route.pool!r}")
            if lst.default_pool is not None and lst.default_pool not in self.pools:
                raise ValueError(f"{where}.default_pool: no pool named {lst.default_pool!r}")
        exposed = admin_exposure_error(self.admin.address, self.admin.tls, self.admin.token_file)
        if exposed is not None:
            raise ValueError(exposed)
        allowed = self.backend_networks
        for pname, pool in self.pools.items():
            for i, b in enumerate(pool.backends):
                why = host_refusal(parse_hostport(b.address)[0], allowed)
                if why is not None:
                    raise ValueError(f"pools.{pname}.backends[{i}].address: {why}")
        return self

    @property
    def fallback_pool(self) -> str:
        return self.default_pool or next(iter(self.pools))
