"""The shard router's config model (`shard.toml`), validated with pydantic.

Shape (deploy/config/shard.toml is a full example, loaded by a test):

- `[shards.NAME] address = "host:port"`: each shard is one PostgreSQL address; it may be a
  `tierproxy dbproxy` in front of a primary and its replicas. Shards keep their config order.
- `[groups.NAME]`: a table group, the tables sharded by one key. `tables` (each table in one group
  only; names as written in SQL, compared lower-case, optionally schema-qualified), `key` (the
  key column, the same name in every table of the group), `key_type` ("integer" for
  smallint/integer/bigint columns, or "text"), `map` ("modulo" | "hash" | "consistent" |
  "range"), `shards` (the shards the map spreads keys over, in order; default all of them), and
  the map's parameters: `vnodes` for "consistent"; `ranges` for "range", a list of
  `{ shard = NAME, below = BOUND }` with strictly increasing bounds where only the last range
  leaves `below` out, so the ranges cover every key (the first starts at the lowest key).
  `dedicated = { "KEY" = "SHARD" }` pins hot keys to shards (TOML keys are strings; for an
  integer group they must be integers).
- `scatter = "allow" | "deny"`: whether a statement with no shard key may go to every shard.
- `[auth]`, `[backend_auth]`: the same shape as the dbproxy's: `[auth]` is the shared front
  end's model (proxy/pgfront/config.py); the router authenticates clients itself and logs in to
  every shard as `backend_auth.user` (mode "service" only, so its own narrower model here).
- `[tls]`: TLS for clients, the dbproxy's model and code (proxy/pgfront/config.py).
- `[admin]`: `address`, `token_file`, `allowed_hosts` and `[admin.tls]` as the lb's: beyond
  loopback it needs TLS plus client certificates or a token (proxy/core/config.py).
- `workers` (processes serving `listen` with SO_REUSEPORT, as the dbproxy's),
  `[timeouts]`, `[hot_keys]` as the other daemons.

Fields marked `restart` cannot change on reload.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from proxy.core.config import (
    Address,
    AdminTlsConfig,
    AdminTokenConfig,
    StrictModel,
    admin_exposure_error,
    parse_hostport,
)
from proxy.pgfront.config import AuthConfig, TlsConfig, UserConfig

from .keys import GroupSpec
from .maps import (
    ConsistentMap,
    DedicatedMap,
    HashMap,
    Key,
    ModuloMap,
    RangeMap,
    ShardMap,
)

__all__ = [
    "Address",
    "AdminConfig",
    "AuthConfig",
    "BackendAuthConfig",
    "GroupConfig",
    "HotKeysConfig",
    "RangeConfig",
    "ShardAddress",
    "ShardConfig",
    "TimeoutsConfig",
    "TlsConfig",
    "UserConfig",
]



_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# A table as written in SQL: name or schema.name (unquoted identifiers, compared lower-case).
_TABLE = re.compile(r"^([a-z_][a-z0-9_$]*\.)?[a-z_][a-z0-9_$]*$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_$]*$")
_INTEGER = re.compile(r"^-?[0-9]+$")


class ShardAddress(StrictModel):
    address: Address  # a PostgreSQL server, or a dbproxy in front of a primary and replicas


class RangeConfig(StrictModel):
    shard: str
    below: int | str | None = None  # exclusive upper bound; only the last range leaves it out


class GroupConfig(StrictModel):
    """A table group: tables sharded by the same key column through one map."""

    tables: list[str] = Field(min_length=1)
    key: str  # the key column, the same name in every table of the group
    key_type: Literal["integer", "text"] = "integer"
    map: Literal["modulo", "hash", "consistent", "range"] = "hash"
    shards: list[str] | None = None  # the map's shards, in order; default every shard
    vnodes: int = Field(default=160, ge=1, le=10_000)  # "consistent": ring points per shard
    ranges: list[RangeConfig] | None = None  # "range" only
    dedicated: dict[str, str] = Field(default_factory=dict)  # hot key -> shard name

    @field_validator("tables")
    @classmethod
    def _table_names(cls, v: list[str]) -> list[str]:
        out = []
        for i, name in enumerate(v):
            low = name.lower()
            if not _TABLE.match(low):
                raise ValueError(f"[{i}] {name!r} is not a table name (name or schema.name)")
            out.append(low)
        if len(set(out)) != len(out):
            raise ValueError("a table is listed twice")
        return out

    @field_validator("key")
    @classmethod
    def _key_name(cls, v: str) -> str:
        if not _COLUMN.match(v.lower()):
            raise ValueError(f"{v!r} is not a column name")
        return v.lower()

    @model_validator(mode="after")
    def _map_fields(self) -> GroupConfig:
        if self.map == "range":
            if not self.ranges:
                raise ValueError("ranges: map 'range' needs ranges")
            if self.shards is not None:
                raise ValueError("shards: map 'range' names its shards in ranges")
            last = len(self.ranges) - 1
            bounds: list[int | str] = []
            for i, r in enumerate(self.ranges):
                if (r.below is None) != (i == last):
                    raise ValueError(
                        f"ranges[{i}].below: only the last range has no upper bound "
                        "(so the ranges cover every key)"
                    )
                if r.below is not None:
                    want = int if self.key_type == "integer" else str
                    if type(r.below) is not want:
                        raise ValueError(f"ranges[{i}].below: expected {self.key_type}")
                    if bounds and not bounds[-1] < r.below:  # type: ignore[operator]
                        raise ValueError(
                            f"ranges[{i}].below: bounds must increase ({bounds[-1]!r} then {r.below!r})"
                        )
                    bounds.append(r.below)
        elif self.ranges is not None:
            raise ValueError(f"ranges: only map 'range' takes ranges, not {self.map!r}")
        if self.map == "modulo" and self.key_type != "integer":
            raise ValueError("map: 'modulo' needs key_type 'integer'")
        if self.shards is not None:
            if not self.shards:
                raise ValueError("shards: give at least one shard (or leave it out for all)")
            if len(set(self.shards)) != len(self.shards):
                raise ValueError("shards: a shard is listed twice")
        for key in self.dedicated:
            if self.key_type == "integer" and not _INTEGER.match(key):
                raise ValueError(f"dedicated: key {key!r} is not an integer")
        return self

    def dedicated_keys(self) -> dict[Key, str]:
        """`dedicated` with keys of the group's type."""
        if self.key_type == "integer":
            return {int(k): v for k, v in self.dedicated.items()}
        return dict(self.dedicated)

    def map_shards(self, all_shards: list[str]) -> tuple[str, ...]:
        if self.ranges is not None:
            return tuple(r.shard for r in self.ranges)
        return tuple(self.shards if self.shards is not None else all_shards)

    def build_map(self, all_shards: list[str]) -> DedicatedMap:
        """The group's map (with its dedicated keys on top), over `all_shards` by default."""
        shards = self.map_shards(all_shards)
        base: ShardMap
        if self.map == "modulo":
            base = ModuloMap(shards)
        elif self.map == "hash":
            base = HashMap(shards)
        elif self.map == "consistent":
            base = ConsistentMap(shards, self.vnodes)
        else:
            assert self.ranges is not None
            base = RangeMap(shards, tuple(r.below for r in self.ranges[:-1]))  # type: ignore[misc]
        return DedicatedMap(base, self.dedicated_keys())


class BackendAuthConfig(StrictModel):
    """How the router logs in to the shards (mode "service" only: one user for every shard)."""

    mode: Literal["service"] = "service"
    user: str
    password: SecretStr | None = None  # None when the shards trust the router


class AdminConfig(AdminTokenConfig):
    """The admin API (/status, /metrics, the reshard endpoints); proxy/core/adminguard.py says what
    it refuses and why. token_file and allowed_hosts come from AdminTokenConfig."""

    address: Address = "127.0.0.1:9188"  # restart; /status, /metrics
    # TLS on the admin port (restart to change); needed, with client certificates or a token,
    # for an address beyond loopback (the token is then asked of reads too).
    tls: AdminTlsConfig | None = None


class TimeoutsConfig(StrictModel):
    client_login: float = Field(default=15.0, gt=0)  # seconds: startup + authentication
    server_connect: float = Field(default=5.0, gt=0)  # seconds: TCP connect + login to a shard
    query: float = Field(default=0.0, ge=0)  # seconds; 0 = none
    drain: float = Field(default=30.0, ge=0)  # SIGTERM: wait this long for sessions to go idle


class HotKeysConfig(StrictModel):
    # Keys tracked per table group by the Space-Saving counter: any key with more than
    # 1/capacity of the group's statements is always among them.
    capacity: int = Field(default=1000, ge=10, le=1_000_000)


class ShardConfig(StrictModel):
    listen: Address = "127.0.0.1:6433"  # restart; clients connect here
    # restart; processes serving `listen` (SO_REUSEPORT; more than 1: a supervisor and N workers)
    workers: int = Field(default=1, ge=1, le=64)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shards: dict[str, ShardAddress] = Field(min_length=1)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    # "deny": a statement without a shard key gets 0A000 instead of going to every shard.
    scatter: Literal["allow", "deny"] = "allow"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsConfig | None = None  # no [tls]: SSLRequest is answered 'N' (clients stay in clear)
    backend_auth: BackendAuthConfig
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    hot_keys: HotKeysConfig = Field(default_factory=HotKeysConfig)

    @field_validator("shards", "groups")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r}: names are 1-63 letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> ShardConfig:
        names = set(self.shards)
        seen_addr: dict[tuple[str, int], str] = {}
        for name, shard in self.shards.items():
            addr = parse_hostport(shard.address)
            if addr in seen_addr:
                raise ValueError(
                    f"shards.{name}.address: {shard.address} is also shard {seen_addr[addr]!r}"
                )
            seen_addr[addr] = name
        listen = parse_hostport(self.listen)
        if listen == parse_hostport(self.admin.address):
            raise ValueError("listen: listen and admin.address must differ")
        exposed = admin_exposure_error(self.admin.address, self.admin.tls, self.admin.token_file)
        if exposed is not None:
            raise ValueError(exposed)
        if listen in seen_addr:
            raise ValueError(f"listen: the router cannot listen on shard {seen_addr[listen]!r}'s address")
        owner: dict[str, str] = {}
        for gname, group in self.groups.items():
            for i, table in enumerate(group.tables):
                if table in owner:
                    raise ValueError(
                        f"groups.{gname}.tables[{i}]: table {table!r} is already in group {owner[table]!r}"
                    )
                owner[table] = gname
            for i, shard in enumerate(group.shards or []):
                if shard not in names:
                    raise ValueError(f"groups.{gname}.shards[{i}]: no shard named {shard!r}")
            for i, r in enumerate(group.ranges or []):
                if r.shard not in names:
                    raise ValueError(f"groups.{gname}.ranges[{i}].shard: no shard named {r.shard!r}")
            for key, shard in group.dedicated.items():
                if shard not in names:
                    raise ValueError(
                        f"groups.{gname}.dedicated: key {key!r} names no shard {shard!r}"
                    )
        return self

    def maps(self) -> dict[str, DedicatedMap]:
        """Each table group's map, by group name."""
        shards = list(self.shards)
        return {name: group.build_map(shards) for name, group in self.groups.items()}

    def table_groups(self) -> dict[str, str]:
        """Table name (lower-case, as configured) -> group name."""
        return {t: name for name, group in self.groups.items() for t in group.tables}

    def group_specs(self) -> list[GroupSpec]:
        """What key extraction needs of each table group."""
        return [GroupSpec(name, frozenset(g.tables), g.key, g.key_type) for name, g in self.groups.items()]
