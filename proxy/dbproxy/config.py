"""The PostgreSQL proxy's config model (`dbproxy.toml`), validated with pydantic.

Every field has its default and unit beside it. Fields marked `restart` cannot change on SIGHUP
reload (sockets are bound once); the reload refuses a config that changes them.

Authentication, both ways (the models are the shared front end's, proxy/pgfront/config.py):

- Clients -> proxy (`[auth]`): the proxy authenticates clients itself against `[auth.users]`. Each
  user has either a plaintext `password` or a stored `secret`: a SCRAM verifier
  (``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``, what ``pg_authid.rolpassword`` holds)
  or an md5 hash (``"md5" + md5(password + user)``). As in PostgreSQL, method "md5" with a SCRAM
  secret runs SCRAM instead, and method "scram-sha-256" cannot use an md5 hash (refused at load).
  "trust" lets anyone in; with `trust_loopback_only` (the default) only from loopback addresses.
- Proxy -> servers (`[backend_auth]`): mode "service" (the default) logs in to every server as the
  one `user`/`password` given there, whatever user the client authenticated as; mode "passthrough"
  logs in as the client's own user name with that user's plaintext `password` from `[auth.users]`
  (so every user must have one: a verifier or hash cannot answer a server's challenge). The
  database is always the one the client asked for.

Session state: a statement that changes session state (SET, PREPARE, LISTEN, temp tables, session
advisory locks) pins the client's session to the primary for the rest of the session;
`session_pinning = "pin"` is the only mode. We pin rather than replay: replaying SETs and
PREPAREs on every replica connection is where splitting proxies get subtly wrong answers
(search_path, role, GUCs set by functions), and pinned sessions are rare in pooled application
traffic.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from proxy.core.config import Address, AdminTlsConfig, AdminTokenConfig, StrictModel, admin_exposure_error, parse_hostport
from proxy.pgfront.config import AuthConfig, BackendAuthConfig, TlsConfig, UserConfig

from .classify_functions import DEFAULT_WRITE_FUNCTIONS
from .qcache_policy import MAX_HINT_TTL, statement_shape
from .qcache_rules import Rule, fold_table_name, statement_fingerprint

__all__ = [
    "Address",
    "AdminConfig",
    "AuthConfig",
    "BackendAuthConfig",
    "CacheConfig",
    "CacheListenConfig",
    "CacheRuleConfig",
    "DbProxyConfig",
    "MonitorConfig",
    "PoolConfig",
    "PrimaryConfig",
    "ReplicaConfig",
    "RoutingConfig",
    "TimeoutsConfig",
    "TlsConfig",
    "TopologyConfig",
    "UserConfig",
]



_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# Function names as the classifier matches them: bare or schema-qualified, compared lower-case.
_FUNCTION = re.compile(r"^([a-z_][a-z0-9_$]*\.)?[a-z_][a-z0-9_$]*$")

# The router reports replica names and "primary" as targets; a replica must not be called that.
RESERVED_NAMES = frozenset({"primary"})


class PrimaryConfig(StrictModel):
    address: Address  # the read-write server


class ReplicaConfig(StrictModel):
    name: str = Field(pattern=_NAME, description="unique; used in metrics, SHOW SERVERS, logs")
    address: Address
    # Share of reads under load: replicas are chosen by outstanding queries / weight.
    weight: int = Field(default=1, ge=1, le=1000)


class RoutingConfig(StrictModel):
    # "lsn": after a write commits at LSN L, the session reads only from replicas replayed past L
    # (or the primary until one has); "primary-window": the session reads from the primary for
    # `primary_window_ms` after its last write; "global": a read sees every commit the proxy
    # acknowledged to any client (causal.py); "off": reads may see stale data. In every mode,
    # catalog reads see every DDL the proxy acknowledged.
    read_your_writes: Literal["lsn", "primary-window", "global", "off"] = "lsn"
    primary_window_ms: int = Field(default=1000, ge=0, le=3_600_000)  # milliseconds
    # A replica further behind than either limit gets no reads. Bytes of WAL not yet replayed;
    # seconds since the last replayed transaction's commit (0 when fully replayed).
    max_lag_bytes: int = Field(default=16 * 1024 * 1024, ge=0)  # bytes
    max_lag_seconds: float = Field(default=10.0, ge=0)  # seconds
    # Functions whose calls send a statement to the primary, in addition to the classifier's
    # DEFAULT_WRITE_FUNCTIONS (nextval, setval, pg_advisory_lock, pg_notify, ...).
    write_functions: list[str] = Field(default_factory=list)
    session_pinning: Literal["pin"] = "pin"  # see the module docstring: we pin, never replay
    # How reads are spread over the replicas. "session" (pgpool-II's default, per-session
    # balancing): a session's first read binds it to the usable replica with the fewest sessions
    # bound per weight (ties rotate), and its later reads stay there while it is usable (and
    # recent enough for read-your-writes), else it binds again; each session holds one replica
    # connection. "statement": each read goes to the usable replica with the fewest outstanding
    # queries per weight (ties rotate), so a session comes to hold a connection on every replica.
    balance: Literal["statement", "session"] = "session"

    @field_validator("write_functions")
    @classmethod
    def _function_names(cls, v: list[str]) -> list[str]:
        out = []
        for i, name in enumerate(v):
            low = name.lower()
            if not _FUNCTION.match(low):
                raise ValueError(f"[{i}] {name!r} is not a function name (name or schema.name)")
            out.append(low)
        return out

    @property
    def all_write_functions(self) -> frozenset[str]:
        """The set to pass to the classifier: the defaults plus this config's additions."""
        return DEFAULT_WRITE_FUNCTIONS | frozenset(self.write_functions)

    @property
    def primary_window(self) -> float:
        """`primary_window_ms` in seconds, the unit of the router's clock."""
        return self.primary_window_ms / 1000.0


class MonitorConfig(StrictModel):
    """The replica monitor: role, replay LSN and lag of every server, polled."""

    interval: float = Field(default=1.0, gt=0, le=3600)  # seconds between polls
    timeout: float = Field(default=1.0, gt=0, le=600)  # a slower poll marks the server down

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> MonitorConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout {self.timeout} must not exceed interval {self.interval}")
        return self


class PoolConfig(StrictModel):
    # Server connections per backend across all (user, database) pools; clients wait above it.
    max_server_connections_per_backend: int = Field(default=100, ge=1, le=10000)
    idle_timeout: float = Field(default=300.0, gt=0)  # seconds an unused server connection is kept
    # seconds a session waits for a server connection when its backend is at the limit; then 53300
    wait_timeout: float = Field(default=30.0, gt=0)
    # What happens to a server connection when its client session ends: "discard" = DISCARD ALL
    # and keep it idle for the next session (cheap; but the backend, its pid, backend_start,
    # session statistics and temp namespace are reused); "fresh" = close it, so each client
    # session gets a new server backend (a server login per session).
    server_reuse: Literal["discard", "fresh"] = "discard"


class TimeoutsConfig(StrictModel):
    client_login: float = Field(default=15.0, gt=0)  # startup + authentication must finish within
    server_connect: float = Field(default=5.0, gt=0)  # TCP connect + login to a server
    # seconds a statement may run; then the proxy sends the server a CancelRequest (57014 from the
    # server). 0 = none (the server's own statement_timeout still applies).
    query: float = Field(default=0.0, ge=0)
    # seconds after that cancel: a server still silent then is given up (connection closed, the
    # client gets 57014 from the proxy); faults.py
    query_cancel_grace: float = Field(default=2.0, gt=0, le=600)
    drain: float = Field(default=30.0, ge=0)  # SIGTERM: wait this long for sessions to go idle


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+/?$", value):
        raise ValueError(f"{value!r} is not a base URL such as http://10.0.0.1:8008")
    return value.rstrip("/")


# "http://host:port": a Patroni REST endpoint or an etcd client URL.
BaseUrl = Annotated[str, AfterValidator(_check_url)]


class TopologyConfig(StrictModel):
    """Where the primary and the replicas come from (docs/dbproxy.md, "Failover").

    "static": `[primary]` and `[[replicas]]` as written. "patroni": the leader of a Patroni cluster
    is the primary and its other members are the replicas, followed without a restart; read from
    `patroni_urls` (REST `/cluster`, polled every `poll_interval`) or from `etcd_urls` + `scope`
    (the keys under `<namespace>/<scope>/`, watched)."""

    source: Literal["static", "patroni"] = "static"
    patroni_urls: list[BaseUrl] = Field(default_factory=list)  # Patroni REST base URLs
    etcd_urls: list[BaseUrl] = Field(default_factory=list)  # etcd client URLs (v3 JSON gateway)
    scope: str | None = Field(default=None, pattern=_NAME)  # Patroni's `scope` (the cluster name)
    namespace: str = Field(default="/service", pattern=r"^/[A-Za-z0-9_./-]*$")  # Patroni's `namespace`
    poll_interval: float = Field(default=0.5, gt=0, le=60)  # seconds between REST polls
    # seconds new writes, new transactions and logins are held while no leader is confirmed;
    # then they get 57P03 (cannot_connect_now)
    failover_hold_timeout: float = Field(default=30.0, gt=0, le=3600)
    # held writes and logins at most; one more gets 53300 at once instead of waiting
    hold_queue_limit: int = Field(default=1000, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _source_settings(self) -> TopologyConfig:
        if self.source == "static":
            if self.patroni_urls or self.etcd_urls or self.scope is not None:
                raise ValueError("source: patroni_urls, etcd_urls and scope need source = \"patroni\"")
            return self
        if bool(self.patroni_urls) == bool(self.etcd_urls):
            raise ValueError("source: \"patroni\" needs either patroni_urls or etcd_urls (not both)")
        if self.etcd_urls and self.scope is None:
            raise ValueError("scope: etcd_urls need the cluster's scope")
        if self.patroni_urls and self.scope is not None:
            raise ValueError("scope: only used with etcd_urls")
        return self


class AdminConfig(AdminTokenConfig):
    """The admin API (/status, /metrics, POST /switchover); proxy/core/adminguard.py says what it
    refuses and why. token_file (needed for POST /switchover when set) and allowed_hosts come from
    AdminTokenConfig."""

    address: Address = "127.0.0.1:9187"  # restart; /status, /metrics
    # TLS on the admin port (restart to change); needed, with client certificates or a token, for an
    # address beyond loopback (the token is then asked of reads too), as the lb's and the shard's.
    tls: AdminTlsConfig | None = None


class CacheRuleConfig(StrictModel):
    """`[[cache.rules]]`: statements cached without a hint (qcache_rules.py says how they match).
    At least one of `tables`, `fingerprint`, `statement`; `fingerprint` and `statement` exclude
    each other."""

    ttl: int = Field(ge=1, le=MAX_HINT_TTL)  # seconds
    # the statement reads only these tables (names folded as PostgreSQL does, schema dropped)
    tables: list[str] | None = Field(default=None, min_length=1)
    fingerprint: str | None = None  # 16 hex digits: PostgreSQL's query fingerprint (pglast)
    statement: str | None = None  # an example statement: its fingerprint is used

    @field_validator("tables")
    @classmethod
    def _fold(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        out = []
        for i, name in enumerate(v):
            folded = fold_table_name(name)
            if folded is None:
                raise ValueError(f"[{i}] {name!r} is not a table name (name or schema.name)")
            out.append(folded)
        return out

    @field_validator("fingerprint")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{16}", v):
            raise ValueError(f"{v!r} is not a fingerprint (16 hex digits)")
        return v.lower() if v is not None else None

    @field_validator("statement")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            shape = statement_shape(v)
            if shape is None or shape.kinds != ("SelectStmt",):
                raise ValueError("not one SELECT statement PostgreSQL can parse")
        return v

    @model_validator(mode="after")
    def _some_condition(self) -> CacheRuleConfig:
        if self.tables is None and self.fingerprint is None and self.statement is None:
            raise ValueError("a rule needs tables, fingerprint or statement")
        if self.fingerprint is not None and self.statement is not None:
            raise ValueError("fingerprint and statement exclude each other (a statement stands for its fingerprint)")
        return self

    def rule(self) -> Rule:
        fp = self.fingerprint if self.statement is None else statement_fingerprint(self.statement)
        return Rule(self.ttl, frozenset(self.tables) if self.tables is not None else None, fp)


class CacheListenConfig(StrictModel):
    """`[cache.listen]`: LISTEN for NOTIFYs of writes that bypass the proxy (qcache_notify.py)."""

    channel: str = Field(default="tierproxy_cache", pattern=r"^[a-z_][a-z0-9_$]{0,62}$")  # the NOTIFY channel
    databases: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(min_length=1)  # one LISTEN each


class CacheConfig(StrictModel):
    """The read-through query cache (issue 20, qcache_*.py). Off by default; restart to change.
    Statements with a leading `/* tierproxy:cache ttl=N */` hint are cached, and those that match
    a `[[cache.rules]]` entry."""

    enabled: bool = False
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=1 << 40)  # the in-process bound
    policy: Literal["lru", "lfu", "fifo"] = "lru"  # eviction when max_bytes is reached
    # fraction; a TTL is shortened by up to this much at random, so entries stored together do
    # not expire together
    jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    # bytes; a larger answer is passed through and not stored
    max_entry_bytes: int = Field(default=1024 * 1024, ge=64, le=1 << 30)
    rules: list[CacheRuleConfig] = Field(default_factory=list)  # first match wins; a hint comes first
    listen: CacheListenConfig | None = None  # no [cache.listen]: writes that bypass the proxy wait for the TTL
    # the shared level (qcache_redis.py): a redis:// (rediss://, unix://) URL; every process and
    # instance naming the same Redis and prefix shares one cache and its invalidations
    redis: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    redis_prefix: str = Field(default="tierproxy:qc", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # seconds; a Redis call slower than this counts as Redis down (the cache is bypassed)
    redis_timeout: float = Field(default=0.5, gt=0.0, le=30.0)
    # seconds; a write's marks live this long unless renewed (every lease / 3 while it runs)
    write_lease: float = Field(default=10.0, ge=1.0, le=3600.0)


class DbProxyConfig(StrictModel):
    listen: Address = "127.0.0.1:6432"  # restart; clients connect here
    # restart; processes serving `listen` (SO_REUSEPORT) under one supervisor. Each worker has its
    # own pools and monitor; /metrics and /status on the admin port sum them all.
    workers: int = Field(default=1, ge=1, le=64)
    # bytes; a client message (a statement, a row of COPY data) larger than this is refused with
    # FATAL 54000 before it is read. PostgreSQL's own limit is 1 GiB.
    max_message_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=1 << 30)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # required with topology.source "static"; must be absent with "patroni" (Patroni names it)
    primary: PrimaryConfig | None = None
    replicas: list[ReplicaConfig] = Field(default_factory=list)  # none: everything goes to primary
    auth: AuthConfig = Field(default_factory=AuthConfig)
    backend_auth: BackendAuthConfig
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    tls: TlsConfig | None = None  # no [tls]: SSLRequest is answered 'N' (clients stay in clear)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> DbProxyConfig:
        # Addresses are compared as written (no DNS at load time): "localhost:5432" and
        # "127.0.0.1:5432" are different to this check.
        names = [r.name for r in self.replicas]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"replicas: duplicate replica names: {', '.join(dupes)}")
        if self.topology.source == "patroni":
            if self.primary is not None or self.replicas:
                raise ValueError("topology.source: with \"patroni\" the primary and replicas come from "
                                 "Patroni; remove [primary] and [[replicas]]")
        elif self.primary is None:
            raise ValueError("primary: field required (or topology.source = \"patroni\")")
        primary = parse_hostport(self.primary.address) if self.primary is not None else None
        seen: dict[tuple[str, int], str] = {}
        for i, r in enumerate(self.replicas):
            if r.name in RESERVED_NAMES:
                raise ValueError(f"replicas[{i}].name: {r.name!r} is reserved")
            addr = parse_hostport(r.address)
            if addr == primary:
                raise ValueError(f"replicas[{i}].address: {r.address} is the primary's address")
            if addr in seen:
                raise ValueError(
                    f"replicas[{i}].address: {r.address} is also replica {seen[addr]!r}"
                )
            seen[addr] = r.name
        if self.cache.enabled and self.workers > 1 and self.cache.redis is None:
            # Each worker would hold its own store, and a write through one would not reach the
            # others': that takes the shared level.
            raise ValueError("cache.enabled: the query cache needs workers = 1 or cache.redis (the shared level)")
        listen = parse_hostport(self.listen)
        if listen == parse_hostport(self.admin.address):
            raise ValueError("listen: listen and admin.address must differ")
        exposed = admin_exposure_error(self.admin.address, self.admin.tls, self.admin.token_file)
        if exposed is not None:
            raise ValueError(exposed)
        if listen == primary or listen in seen:
            raise ValueError("listen: the proxy cannot listen on a server's address")
        if self.backend_auth.mode == "passthrough":
            for name, user in self.auth.users.items():
                if user.password is None:
                    raise ValueError(
                        f"auth.users.{name}.password: backend_auth mode 'passthrough' needs "
                        "each user's plaintext password"
                    )
        return self
