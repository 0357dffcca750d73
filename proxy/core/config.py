"""Config loading shared by every daemon: TOML in, a frozen pydantic model out, located errors.

Each daemon defines its own model (subclass of `StrictModel`) and calls `load_config(path, Model)`.
Errors are collected into one `ConfigError` whose lines name the file, the key path and the reason,
for example ``lb.toml: pools.web.backends[1].address: port 99999 out of range``; the CLI prints them
and exits 2 before anything is bound.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from proxy.core.adminguard import is_loopback_host, read_token
from proxy.core.tls import intermediate_context

__all__ = [
    "ConfigError",
    "StrictModel",
    "load_config",
    "reload_config",
    "RESTART_ONLY",
    "parse_config",
    "format_loc",
    "parse_hostport",
    "Address",
    "AdminTlsConfig",
    "AdminTokenConfig",
    "admin_exposure_error",
]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors and a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConfigError(Exception):
    """A config file could not be read or failed validation; `lines` are located messages."""

    def __init__(self, source: str, lines: list[str]) -> None:
        self.source = source
        self.lines = lines
        super().__init__("\n".join(lines))


M = TypeVar("M", bound=BaseModel)


def format_loc(loc: tuple[Any, ...]) -> str:
    """Render a pydantic error location as a key path: ``pools.web.backends[1].address``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_KEY_PATH = re.compile(r"^[A-Za-z_][\w]*(\[\d+\]|\.[A-Za-z_]\w*)*$")


def _clean_msg(msg: str) -> str:
    # pydantic prefixes custom validator messages with "Value error, "; the reader wants the reason.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def parse_config(data: dict[str, Any], model: type[M], source: str = "<config>") -> M:
    """Validate an already-parsed mapping; raise `ConfigError` with one located line per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc_t = tuple(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else _clean_msg(err["msg"])
            # Cross-field validators name the key they blame as "key.path: reason".
            head, sep, rest = msg.partition(": ")
            if sep and _KEY_PATH.match(head):
                loc_t += (head,)
                msg = rest
            loc = format_loc(loc_t)
            lines.append(f"{source}: {loc}: {msg}")
        raise ConfigError(source, lines) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a TOML file and validate it against `model`."""
    p = Path(path)
    source = p.name
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(source, [f"{p}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"{source}: not UTF-8: {exc.reason} at byte {exc.start}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"{source}: invalid TOML: {exc}"]) from None
    return parse_config(data, model, source)


# What a reload cannot change (bound sockets, the admin port, the worker processes): a label for
# the refusal and how to read it from a config.
RESTART_ONLY: tuple[tuple[str, Callable[[Any], object]], ...] = tuple(
    (name, attrgetter(name)) for name in ("listen", "admin.address", "admin.tls", "workers")
)


def reload_config(path: str | Path | None, model: type[M], running: M,
                  restart_only: tuple[tuple[str, Callable[[Any], object]], ...] = RESTART_ONLY) -> M:  # fmt: skip
    """`path` read again for a reload (SIGHUP or the admin API): ConfigError as `load_config`,
    ValueError when a `restart_only` setting differs from the `running` config's."""
    if path is None:
        raise RuntimeError("no config file to reload from")
    new = load_config(path, model)
    if any(get(new) != get(running) for _, get in restart_only):
        labels = [label for label, _ in restart_only]
        raise ValueError(f"{', '.join(labels[:-1])} and {labels[-1]} cannot change on reload; restart instead")
    return new


def parse_hostport(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``host:port``, ``[v6]:port`` or ``:port``; raise ValueError with a reason."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected 'host:port'")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected '[v6addr]:port'")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"{value!r}: IPv6 addresses need brackets, '[addr]:port'")
    if not port_s.isdigit():
        raise ValueError(f"{value!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return (host or default_host), port


def _check_address(value: str) -> str:
    parse_hostport(value)
    return value


# "host:port" in a daemon's config (listen, admin, backends, shards), validated at load time so a
# bad port is reported with its key path. One definition for every daemon.
Address = Annotated[str, AfterValidator(_check_address)]


class AdminTokenConfig(StrictModel):
    """What every daemon's [admin] table shares: the bearer token file and the allowed host names
    (proxy/core/adminguard.py says what they refuse). Each daemon subclasses it and adds its
    `address` (its own default port) and anything else it needs."""

    # A file holding a bearer token; when set, changes (POST/DELETE) need
    # "Authorization: Bearer <token>". Re-read on reload. Reads stay open.
    token_file: str | None = None
    # Host names the admin API answers to besides IP literals, localhost names and its own host
    # (e.g. the machine's DNS name for a Prometheus scraper); other names get 403.
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: str | None) -> str | None:
        if v is not None:
            read_token(v)  # ValueError says why
        return v

    @property
    def token(self) -> str | None:
        return read_token(self.token_file) if self.token_file else None


class AdminTlsConfig(StrictModel):
    """`[admin.tls]`: the admin port over TLS; with `client_ca_file` clients need a certificate
    signed by that CA."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    @model_validator(mode="after")
    def _loads(self) -> AdminTlsConfig:
        intermediate_context(self.cert_file, self.key_file, client_ca_file=self.client_ca_file)
        return self


def admin_exposure_error(address: str, tls: AdminTlsConfig | None, token_file: str | None) -> str | None:
    """Why an admin API on `address` is too exposed, or None. Beyond loopback anyone on the network
    can reach it, so it needs TLS plus client certificates or a bearer token (which the daemon then
    asks of reads too: /status and /metrics show the topology)."""
    if is_loopback_host(parse_hostport(address)[0]):
        return None
    if tls is None or (tls.client_ca_file is None and token_file is None):
        return (f"admin.address: {address} is not loopback: it needs [admin.tls] and "
                "either admin.tls.client_ca_file (client certificates) or admin.token_file")
    return None
