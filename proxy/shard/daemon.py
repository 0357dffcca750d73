"""`tierproxy shard`: the PostgreSQL shard router daemon.

Wires the parts together: the listening socket (one `ShardSession` per client), a server pool per
shard (proxy/pgfront/pool.py), the `ShardRouter` (maps and key extraction, rebuilt on reload),
the hot-key counters, cancel keys, the console on the virtual database `tierproxy` (SHOW SHARDS,
SHOW SHARD FOR, SHOW HOT KEYS, SHOW CLIENTS, SHOW HELP), the admin HTTP app (/status, /metrics,
/healthz) and the runtime hooks (SIGHUP reload, SIGTERM drain). One process: `workers` must be 1
(the config model refuses more). Sessions call back into the daemon for everything shared; no
state is global.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.core.admin import AdminServer, make_admin_app
from proxy.core.config import load_config, parse_hostport
from proxy.core.metrics import FuncCollector, new_registry
from proxy.pgfront import console as framework
from proxy.pgfront.cancel import CancelKeys
from proxy.pgfront.clientauth import Credentials
from proxy.pgfront.drain import drain_sessions
from proxy.pgfront.login_limits import LoginLimiter
from proxy.pgfront.pool import ServerPools
from proxy.pgfront.server import ServerConn, send_cancel
from proxy.pgwire import encode

from .config import ShardConfig
from .console import (
    ShowHotKeys,
    ShowShardFor,
    ShowShards,
    parse_command,
    render_hot_keys,
    render_shard_for,
    render_shards,
)
from .hotkeys import HotKeys
from .keys import All, One, Param, Plan, Refuse, Some
from .router import ShardRouter
from .session import ShardSession

__all__ = ["ShardDaemon"]

log = logging.getLogger("tierproxy.shard")
VERSION = "0.1"
SWEEP_INTERVAL = 5.0  # seconds between idle-pool sweeps
MAX_SERVER_CONNECTIONS = 1000  # per shard
IDLE_TIMEOUT = 60.0  # seconds an idle pooled shard connection is kept


class ShardMetrics:
    """Plain counters, exported at scrape time (proxy.core.metrics explains why)."""

    def __init__(self) -> None:
        self.routed: dict[tuple[str, str], int] = {}  # (shard, kind) -> statements
        self.scatters = 0  # statements that ran on several shards
        self.errors = 0  # ErrorResponses the router sent (its refusals and shards' errors)
        self.auth_failures = 0
        self.login_failures = 0
        self.logins_throttled = 0
        self.clients_total = 0
        self.server_lost = 0
        self.cancels = 0


class ShardDaemon:
    def __init__(self, cfg: ShardConfig, config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.max_message_length = 1 << 30
        self.creds = Credentials(cfg.auth)
        self.login_limiter = LoginLimiter(cfg.auth.max_failed_logins_per_minute)
        self.tls_context = None  # no [tls] in the shard config yet
        self.router = ShardRouter(cfg)
        self.hot = HotKeys(cfg.shards, cfg.hot_keys.capacity)
        self.c_collation = False  # text ORDER BY across shards needs COLLATE "C" (gather.py)
        self.metrics = ShardMetrics()
        self.sessions: set[ShardSession] = set()
        self.closing: set[ShardSession] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._cancel_keys = CancelKeys()
        self.pools = ServerPools(
            addresses=self._addresses(cfg), login=self._server_login,
            max_per_backend=MAX_SERVER_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
            connect_timeout=cfg.timeouts.server_connect, wait_timeout=cfg.timeouts.server_connect,
        )  # fmt: skip
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self.server: asyncio.base_events.Server | None = None
        self.admin: AdminServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started_at = time.time()

    @staticmethod
    def _addresses(cfg: ShardConfig) -> dict[str, tuple[str, int]]:
        return {name: parse_hostport(s.address) for name, s in cfg.shards.items()}

    def _server_login(self, _user: str) -> tuple[str, str | None]:
        ba = self.cfg.backend_auth
        return ba.user, ba.password.get_secret_value() if ba.password is not None else None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = parse_hostport(self.cfg.listen)
        self.server = await loop.create_server(lambda: ShardSession(self), host, port,
                                               reuse_address=True, backlog=1024)  # fmt: skip
        for sock in self.server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sweeper = loop.create_task(self._sweep_loop())
        app = make_admin_app(self.registry)
        app.router.add_get("/status", self._status_handler)
        self.admin = AdminServer(app, self.cfg.admin.address)
        try:
            await self.admin.start()
        except OSError:
            self.server.close()
            raise
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "shards": list(self.cfg.shards)})  # fmt: skip

    async def reload(self) -> None:
        """A new config: new maps and groups for the next statements; shards whose address
        changed lose their idle connections (sessions keep theirs until they end)."""
        if self.config_path is None:
            raise RuntimeError("no config file to reload from")
        new = load_config(self.config_path, ShardConfig)
        if (new.listen, new.admin.address, new.workers) != (self.cfg.listen, self.cfg.admin.address, self.cfg.workers):
            raise ValueError("listen, admin.address and workers cannot change on reload; restart instead")
        router = ShardRouter(new)
        creds = Credentials(new.auth)
        addresses = self._addresses(new)
        for name, addr in self.pools.addresses.items():
            if addresses.get(name) != addr:
                self.pools.close_backend(name)
        self.pools.addresses = addresses
        self.pools.connect_timeout = self.pools.wait_timeout = new.timeouts.server_connect
        if set(new.shards) != set(self.cfg.shards) or new.hot_keys != self.cfg.hot_keys:
            self.hot = HotKeys(new.shards, new.hot_keys.capacity)
        self.cfg, self.router, self.creds = new, router, creds
        self.login_limiter.limit = new.auth.max_failed_logins_per_minute
        log.info("reloaded", extra={"shards": list(new.shards), "groups": list(new.groups)})

    async def drain(self) -> None:
        if self.server is not None:
            self.server.close()
        await drain_sessions(self.sessions, self.closing, self.cfg.timeouts.drain)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        self.pools.close_all()
        for conn in self.pools.servers():
            conn.close()
        if self.admin is not None:
            await self.admin.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.pools.sweep(time.monotonic())

    # -- for sessions (proxy.pgfront.session.FrontendServices) ------------------------------------

    @property
    def client_login_timeout(self) -> float:
        return self.cfg.timeouts.client_login

    @property
    def tls_required(self) -> bool:
        return False

    @property
    def failed_login_delay(self) -> float:
        return self.cfg.auth.failed_login_delay_ms / 1000.0

    @property
    def console_is_local(self) -> bool:
        return True

    def login_candidates(self) -> list[str]:
        """The client gets its first shard's server parameters and cancel key."""
        return list(self.router.shards[:1])

    def console_params(self, user: str) -> dict[str, str]:
        return {
            "server_version": f"15.0 (tierproxy shard {VERSION})", "server_encoding": "UTF8",
            "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "integer_datetimes": "on",
            "standard_conforming_strings": "on", "TimeZone": "UTC", "IntervalStyle": "postgres",
            "is_superuser": "off", "session_authorization": user, "application_name": "",
        }  # fmt: skip

    def register_cancel_key(self, session: ShardSession, key: tuple[int, int] | None = None) -> tuple[int, int]:
        self.metrics.clients_total += 1
        return self._cancel_keys.register(session, key)

    def cancel(self, pid: int, secret: int) -> None:
        session = self._cancel_keys.get(pid, secret)
        if session is None:
            return
        self.metrics.cancels += 1
        for conn in session.cancel_targets():
            self._spawn(send_cancel(conn.address, conn.pid, conn.secret))

    def session_ended(self, session: ShardSession) -> None:
        self.sessions.discard(session)
        self._cancel_keys.forget(session, session.key)

    def started(self, conn: ServerConn) -> None:
        conn.sent_at = time.monotonic()

    def finished(self, conn: ServerConn) -> None:
        pass

    def restart_query_timer(self, conn: ServerConn) -> None:
        pass

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def server_lost(self, conn: ServerConn) -> None:
        self.metrics.server_lost += 1
        self.pools.discard(conn)

    def release_server(self, conn: ServerConn) -> None:
        if conn.busy or conn._internal and conn.session is not None:
            self._spawn(send_cancel(conn.address, conn.pid, conn.secret))
            conn.set_attached(None)
            self.pools.discard(conn)
            return
        self._spawn(self.pools.release(conn))

    def count_plan(self, plan: Plan, sql: str, params: Sequence[Any] | None = None) -> None:
        """Statements routed per shard and kind, and the keys they used (hot keys); `params`:
        the bound values (decoded keys) of an extended-protocol statement."""
        routed = self.metrics.routed
        if isinstance(plan, One):
            shards, kind = [plan.shard], "single"
        elif isinstance(plan, Some):
            shards, kind = [s for s, _ in plan.parts], "multi"
        elif isinstance(plan, All):
            shards, kind = list(self.router.shards), "scatter"
        else:
            return
        for s in shards:
            routed[(s, kind)] = routed.get((s, kind), 0) + 1
        a = self.router.analyze(sql)
        if a.group is None or a.group not in self.router.maps:
            for s in shards:
                self.hot.record_shard(s)
            return
        keys = a.keys if a.kind == "keyed" else a.row_keys if a.kind == "insert" else ()
        m = self.router.maps[a.group]
        recorded = False
        for k in keys:
            if isinstance(k, Param):
                k = params[k.number - 1] if params is not None and 1 <= k.number <= len(params) else None
            if k is None:
                continue
            try:
                self.hot.record(a.group, k, m.shard_for(k))
                recorded = True
            except ValueError:
                continue
        if not recorded:
            for s in shards:
                self.hot.record_shard(s)

    # -- console --------------------------------------------------------------------------------

    def console(self, sql: str) -> bytes:
        cmd = parse_command(sql)
        if isinstance(cmd, Refuse):
            return encode.error_response("ERROR", cmd.sqlstate, cmd.message)
        if isinstance(cmd, ShowShards):
            cols, rows = render_shards({n: s.address for n, s in self.cfg.shards.items()}, self.shard_states(),
                                       self.rows_routed())  # fmt: skip
            return framework.rows_answer(cols, rows)
        if isinstance(cmd, ShowShardFor):
            kinds = {n: g.map for n, g in self.cfg.groups.items()}
            types = {n: g.key_type for n, g in self.cfg.groups.items()}
            out = render_shard_for(cmd, self.router.maps, types, kinds)
            if isinstance(out, Refuse):
                return encode.error_response("ERROR", out.sqlstate, out.message)
            return framework.rows_answer(*out)
        if isinstance(cmd, ShowHotKeys):
            return framework.rows_answer(*render_hot_keys(self.hot.top(cmd.limit)))
        return framework.run_console(sql, self.console_snapshot(), _COMMANDS)

    async def console_async(self, sql: str) -> bytes:
        return self.console(sql)

    def shard_states(self) -> dict[str, str]:
        """A shard is "up" unless its last connection attempt failed and none is open."""
        out = {}
        for name in self.cfg.shards:
            have = any(c.backend == name and not c.closed for c in self.pools.servers())
            out[name] = "connected" if have else "idle"
        return out

    def rows_routed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (shard, _), n in self.metrics.routed.items():
            out[shard] = out.get(shard, 0) + n
        return out

    def console_snapshot(self) -> dict[str, Any]:
        clients = []
        for s in self.sessions:
            clients.append({"user": s.user, "database": s.database, "state": s.phase,
                            "statements": s.statements_run, "in_transaction": s.router.in_transaction,
                            "transaction_shard": s.router.state.shard, "servers": sorted(s.servers)})  # fmt: skip
        return {"clients": clients, "version": VERSION}

    # -- admin HTTP -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        skew = self.hot.skew()
        return {
            "version": VERSION, "uptime": round(time.time() - self.started_at, 3),
            "shards": [{"name": n, "address": s.address, "state": st, "rows_routed": self.rows_routed().get(n, 0)}
                       for (n, s), st in zip(self.cfg.shards.items(), self.shard_states().values(), strict=True)],
            "groups": {n: {"map": g.map, "key": g.key, "tables": g.tables} for n, g in self.cfg.groups.items()},
            "scatter": self.cfg.scatter, "clients": len(self.sessions),
            "hot_keys": [{"group": h.group, "key": h.key, "shard": h.shard, "count": h.count,
                          "error": h.error, "share": round(h.share, 4)} for h in self.hot.top(20)],
            "skew": {"busiest": skew.busiest, "max_to_mean": round(skew.max_to_mean, 4)},
            "pools": self.pools.snapshot(),
        }  # fmt: skip

    async def _status_handler(self, _request: web.Request) -> web.Response:
        return web.json_response(self.status(), dumps=_dumps)

    def _collect(self) -> Iterable[Metric]:
        p = "tierproxy_shard_"
        m = self.metrics
        routed = CounterMetricFamily(p + "routed_statements", "Statements routed, per shard and kind "
                                     "(single: one shard by key; multi: some shards; scatter: every shard)",
                                     labels=["shard", "kind"])  # fmt: skip
        for (shard, kind), n in sorted(m.routed.items()):
            routed.add_metric([shard, kind], n)
        yield routed
        yield CounterMetricFamily(p + "scatters", "Statements that ran on several shards", value=m.scatters)
        yield CounterMetricFamily(p + "errors", "ErrorResponses sent: the router's refusals and shards' errors",
                                  value=m.errors)
        for name, value, help_ in (("clients_accepted", m.clients_total, "Clients that logged in"),
                                   ("auth_failures", m.auth_failures, "Failed client authentications"),
                                   ("server_lost", m.server_lost, "Shard connections lost while attached"),
                                   ("cancels", m.cancels, "Cancel requests forwarded"),
                                   ("server_connects", self.pools.connects, "Shard connections opened")):
            yield CounterMetricFamily(p + name, help_, value=value)
        yield GaugeMetricFamily(p + "clients", "Client sessions now", value=len(self.sessions))
        by_name: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in self.hot.metrics():
            fam = by_name.get(name)
            if fam is None:
                fam = by_name[name] = GaugeMetricFamily(name, _HOT_HELP.get(name, name), labels=sorted(labels))
            fam.add_metric([labels[k] for k in sorted(labels)], value)
        yield from by_name.values()


_HOT_HELP = {
    "tierproxy_shard_statements_total": "Statements per shard (hot-key accounting)",
    "tierproxy_shard_skew_ratio": "Busiest shard's statements over the mean per shard (1 = balanced)",
    "tierproxy_shard_hottest_key_share": "The hottest key's share of its table group's statements",
}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def _clients(s: Mapping[str, Any]) -> framework.Rows:
    cols = ("user", "database", "state", "statements", "in_transaction", "transaction_shard", "servers")
    return cols, [(c["user"], c["database"], c["state"], c["statements"], c["in_transaction"],
                   c["transaction_shard"], ",".join(c["servers"])) for c in s["clients"]]


def _version(s: Mapping[str, Any]) -> framework.Rows:
    return ("version",), [(f"tierproxy shard {s['version']}",)]


def _help(_s: Mapping[str, Any]) -> framework.Rows:
    return ("command",), [(c,) for c in ("SHOW SHARDS", "SHOW SHARD FOR <key> [IN <group>]",
                                         "SHOW HOT KEYS [<n>]", "SHOW CLIENTS", "SHOW VERSION", "SHOW HELP")]


_COMMANDS: dict[str, framework.Command] = {"CLIENTS": _clients, "VERSION": _version, "HELP": _help}
