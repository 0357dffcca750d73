"""`tierproxy shard`: the PostgreSQL shard router daemon.

Wires the parts together: the listening socket (one `ShardSession` per client), a server pool per
shard (proxy/pgfront/pool.py), the `ShardRouter` (maps and key extraction, rebuilt on reload),
the hot-key counters, cancel keys, the console on the virtual database `tierproxy` (SHOW SHARDS,
SHOW SHARD FOR, SHOW HOT KEYS, SHOW CLIENTS, SHOW HELP), the admin HTTP app (/status, /metrics,
/healthz) and the runtime hooks (SIGHUP reload, SIGTERM drain). Sessions call back into the
daemon for everything shared; no state is global.

`workers = N` (N > 1) runs as the dbproxy and the lb do (proxy/core/workers.py): the process the
operator started is the supervisor (the admin port, no clients), and N worker processes serve
`listen` with SO_REUSEPORT, each with its own pools, sessions and counters. A CancelRequest
reaches whichever worker the kernel picks: a key that worker did not issue is passed to the
supervisor, which hands it to every worker, and the one holding the session cancels. /metrics,
/status and the console (SHOW SHARDS, SHOW HOT KEYS, SHOW CLIENTS) show every worker's figures
together (stats.py): the supervisor gathers the workers' snapshots, and a worker's console asks
the supervisor for them. `[tls]` is the dbproxy's (proxy/pgfront/config.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import Metric

from proxy import _native
from proxy.core.admin import AdminServer, admin_guard, admin_server, make_admin_app
from proxy.core.adminguard import AdminGuard
from proxy.core.config import parse_hostport, reload_config
from proxy.core.metrics import FuncCollector, new_registry
from proxy.core.statuspage import status_page
from proxy.core.workers import (
    ControlChannel,
    WorkerSet,
    process_role,
    start_worker_channel,
)
from proxy.pgfront import console as framework
from proxy.pgfront.cancel import CancelKeys, route_worker_message
from proxy.pgfront.clientauth import Credentials
from proxy.pgfront.config import tls_context
from proxy.pgfront.drain import CLOSE_FLUSH_SECONDS
from proxy.pgfront.frontdaemon import FrontDaemon
from proxy.pgfront.listen import start_listener
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
from .fence import ReshardControl
from .hotkeys import HotKeys
from .keys import All, One, Param, Plan, Refuse, Some
from .router import ShardRouter
from .session import ShardSession
from .stats import collect, hot_keys, merge, rows_routed, snapshot
from .statuspage import SERIES, render_picture

__all__ = ["ShardDaemon"]

log = logging.getLogger("tierproxy.shard")
VERSION = "0.1"
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
        self.cancels_relayed = 0  # CancelRequests for keys another worker issued
        self.query_timeouts = 0  # statements past timeouts.query (canceled on their shards)


class ShardDaemon(FrontDaemon):
    def __init__(self, cfg: ShardConfig, config_path: str | Path | None = None, *,
                 worker_fd: int | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.config_path = config_path
        self.worker_fd = worker_fd
        self.role = process_role(worker_fd, cfg.workers, config_path)
        self.workers: WorkerSet | None = None  # supervisor
        self.control: ControlChannel | None = None  # worker
        self._merged: dict[str, Any] | None = None  # supervisor: the workers' snapshots, merged
        self.max_message_length = 1 << 30
        self.creds = Credentials(cfg.auth)
        self.login_limiter = LoginLimiter(cfg.auth.max_failed_logins_per_minute)
        self.tls_context = tls_context(cfg.tls)
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
        self.reshard = ReshardControl(self)  # fence.py: the write fence and switch of a reshard
        self.registry.register(FuncCollector(self.reshard.collect))
        self.server: asyncio.base_events.Server | None = None
        self.admin: AdminServer | None = None
        self.admin_guard: AdminGuard | None = None
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
        """Single: everything. Worker: the listener (SO_REUSEPORT) and a control channel.
        Supervisor: the admin port and the workers (see proxy/core/workers.py)."""
        loop = asyncio.get_running_loop()
        if self.role != "supervisor":
            self.server = await start_listener(lambda: ShardSession(self), self.cfg.listen,
                                               worker=self.role == "worker")  # fmt: skip
            self._sweeper = loop.create_task(self._sweep_loop())
        if self.role == "worker":
            assert self.worker_fd is not None
            self.control = await start_worker_channel(self.worker_fd, self._on_control)
            return
        if self.role == "supervisor":
            assert self.config_path is not None
            self.workers = WorkerSet(Path(self.config_path), self.cfg.workers, lambda _i: None,
                                     daemon="shard", on_message=self._worker_message)  # fmt: skip
            await self.workers.start()
        self.admin_guard = admin_guard(self.cfg.admin)
        app = make_admin_app(self.registry, before_scrape=self._refresh_stats, guard=self.admin_guard,
                             series=SERIES)  # fmt: skip
        app.router.add_get("/status", self._status_handler)
        app.router.add_get("/", self._page_handler)
        self.reshard.add_routes(app)
        self.admin = admin_server(app, self.cfg.admin)
        try:
            await self.admin.start()
        except OSError:
            if self.server is not None:
                self.server.close()
            if self.workers is not None:
                await self.workers.stop(5.0)
            raise
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "workers": self.cfg.workers, "shards": list(self.cfg.shards)})  # fmt: skip

    async def reload(self) -> None:
        """A new config: new maps and groups for the next statements; shards whose address
        changed lose their idle connections (sessions keep theirs until they end)."""
        new = reload_config(self.config_path, ShardConfig, self.cfg)
        token = new.admin.token  # read before anything changes: a vanished file fails the reload
        router = ShardRouter(new)
        creds = Credentials(new.auth)
        tls = tls_context(new.tls)  # a renewed certificate applies to new clients
        addresses = self._addresses(new)
        for name, addr in self.pools.addresses.items():
            if addresses.get(name) != addr:
                self.pools.close_backend(name)
        self.pools.addresses = addresses
        self.pools.connect_timeout = self.pools.wait_timeout = new.timeouts.server_connect
        if set(new.shards) != set(self.cfg.shards) or new.hot_keys != self.cfg.hot_keys:
            self.hot = HotKeys(new.shards, new.hot_keys.capacity)
        self.cfg, self.router, self.creds, self.tls_context = new, router, creds, tls
        self.login_limiter.limit = new.auth.max_failed_logins_per_minute
        if self.admin_guard is not None:
            self.admin_guard.update(token, new.admin.allowed_hosts)  # a token rotates with a reload
        if self.workers is not None:
            self.workers.broadcast({"op": "reload"})
        log.info("reloaded", extra={"shards": list(new.shards), "groups": list(new.groups)})

    async def drain(self) -> None:
        if self.workers is not None:
            await self.workers.stop(self.cfg.timeouts.drain + CLOSE_FLUSH_SECONDS + 5.0)
        await self._drain_front()
        if self.admin is not None:
            await self.admin.stop()

    # -- for sessions (proxy.pgfront.session.FrontendServices) ------------------------------------

    @property
    def console_is_local(self) -> bool:
        """A worker's console needs the supervisor (`console_async`): SHOW covers all workers."""
        return self.control is None

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

    def cancel(self, pid: int, secret: int, *, forward: bool = True) -> None:
        session = self._cancel_keys.get(pid, secret)
        if session is None:
            if forward and self.control is not None:
                # Another worker may have issued it: the supervisor asks them all.
                self.metrics.cancels_relayed += 1
                self.control.send({"op": "cancel", "pid": pid, "secret": secret})
            return  # PostgreSQL too ignores a cancel with an unknown key, silently
        self.metrics.cancels += 1
        for conn in session.cancel_targets():
            self._spawn(send_cancel(conn.address, conn.pid, conn.secret))

    def started(self, conn: ServerConn) -> None:
        conn.sent_at = time.monotonic()

    def finished(self, conn: ServerConn) -> None:
        pass

    def restart_query_timer(self, conn: ServerConn) -> None:
        pass

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
        # One key planned to One shard (keys.py `_plan_keys`): that is the key's shard, already
        # mapped for the plan; the map is asked again only for several keys or rows.
        one = plan.shard if a.kind == "keyed" and len(keys) == 1 and plan.__class__ is One else None
        for k in keys:
            if isinstance(k, Param):
                k = params[k.number - 1] if params is not None and 1 <= k.number <= len(params) else None
            if k is None:
                continue
            try:
                self.hot.record(a.group, k, one or m.shard_for(k))
                recorded = True
            except ValueError:
                continue
        if not recorded:
            for s in shards:
                self.hot.record_shard(s)

    # -- console --------------------------------------------------------------------------------

    def console(self, sql: str) -> bytes:
        """The console's answer from this process's own figures (one process)."""
        return self.render_console(sql, snapshot(self))

    async def console_async(self, sql: str) -> bytes:
        """`console` for a worker: the supervisor gathers every worker's snapshot, so SHOW
        SHARDS, SHOW HOT KEYS and SHOW CLIENTS cover all of them. If the supervisor does not
        answer, this worker's own figures."""
        if self.control is None:
            return self.console(sql)
        try:
            snap = (await self.control.request({"op": "console"}))["snapshot"]
        except (TimeoutError, KeyError):
            log.warning("console: no answer from the supervisor; showing this worker only")
            snap = snapshot(self)
        return self.render_console(sql, snap)

    def render_console(self, sql: str, snap: dict[str, Any]) -> bytes:
        cmd = parse_command(sql)
        if isinstance(cmd, Refuse):
            return encode.error_response("ERROR", cmd.sqlstate, cmd.message)
        if isinstance(cmd, ShowShards):
            cols, rows = render_shards({n: s.address for n, s in self.cfg.shards.items()}, self.shard_states(snap),
                                       rows_routed(snap))  # fmt: skip
            return framework.rows_answer(cols, rows)
        if isinstance(cmd, ShowShardFor):
            kinds = {n: g.map for n, g in self.cfg.groups.items()}
            types = {n: g.key_type for n, g in self.cfg.groups.items()}
            out = render_shard_for(cmd, self.router.maps, types, kinds)
            if isinstance(out, Refuse):
                return encode.error_response("ERROR", out.sqlstate, out.message)
            return framework.rows_answer(*out)
        if isinstance(cmd, ShowHotKeys):
            return framework.rows_answer(*render_hot_keys(self._hot(snap).top(cmd.limit)))
        return framework.run_console(sql, {"clients": snap["client_rows"], "version": VERSION}, _COMMANDS)

    def shard_states(self, snap: dict[str, Any]) -> dict[str, str]:
        """"connected" when a process holds a connection to the shard now, else "idle"."""
        return {name: "connected" if name in snap["connected"] else "idle" for name in self.cfg.shards}

    def client_rows(self) -> list[dict[str, Any]]:
        return [{"user": s.user, "database": s.database, "state": s.phase, "statements": s.statements_run,
                 "in_transaction": s.router.in_transaction, "transaction_shard": s.router.state.shard,
                 "servers": sorted(s.servers)} for s in self.sessions]  # fmt: skip

    def _hot(self, snap: dict[str, Any]) -> HotKeys:
        return hot_keys(snap, self.cfg.shards, self.cfg.hot_keys.capacity)

    # -- admin HTTP -------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        """Every worker's figures (supervisor, as of the last refresh) or this process's own."""
        if self.role == "supervisor":
            return self._merged or merge([], self.cfg.shards, self.cfg.hot_keys.capacity)
        return snapshot(self)

    def status(self) -> dict[str, Any]:
        snap = self._snapshot()
        hot = self._hot(snap)
        skew = hot.skew()
        routed = rows_routed(snap)
        states = self.shard_states(snap)
        return {
            "version": VERSION, "uptime": round(time.time() - self.started_at, 3),
            "workers": snap.get("workers", [{"pid": snap["pid"], "clients": snap["clients"],
                                             "statements": sum(routed.values())}]),
            "shards": [{"name": n, "address": s.address, "state": states[n], "rows_routed": routed.get(n, 0)}
                       for n, s in self.cfg.shards.items()],
            "groups": {n: {"map": g.map, "key": g.key, "tables": g.tables} for n, g in self.cfg.groups.items()},
            "scatter": self.cfg.scatter, "clients": snap["clients"], "tls": self.cfg.tls is not None,
            "hot_keys": [{"group": h.group, "key": h.key, "shard": h.shard, "count": h.count,
                          "error": h.error, "share": round(h.share, 4)} for h in hot.top(20)],
            "skew": {"busiest": skew.busiest, "max_to_mean": round(skew.max_to_mean, 4)},
            "counters": snap["counters"], "pools": snap["pools"], "native": _native.status(),
        }  # fmt: skip

    async def _status_handler(self, _request: web.Request) -> web.Response:
        await self._refresh_stats()
        return web.json_response(self.status(), dumps=_dumps)

    async def _page_handler(self, request: web.Request) -> web.Response:
        await self._refresh_stats()
        return status_page(request, "shard", *render_picture(self.status()))

    def _collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        return collect(snap, self._hot(snap))

    # -- workers ----------------------------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        """Supervisor, before a scrape or /status: gather and merge the workers' snapshots."""
        if self.workers is not None:
            self._merged = merge(await self.workers.snapshots(), self.cfg.shards, self.cfg.hot_keys.capacity)
            await self.reshard.refresh()  # fence.py: the workers' held/refused counts

    def _worker_message(self, index: int, msg: dict[str, Any]) -> None:
        """Supervisor: a worker got a CancelRequest for a key it did not issue (ask them all), or
        a console query that needs every worker's figures (proxy/pgfront/cancel.py)."""
        if self.workers is not None:
            route_worker_message(self.workers, index, msg,
                                 lambda i, rid: self._spawn(self._answer_console(i, rid)))

    async def _answer_console(self, index: int, rid: int) -> None:
        assert self.workers is not None
        await self._refresh_stats()
        self.workers.send_to(index, {"rid": rid, "snapshot": self._merged})

    async def _on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Worker: the supervisor's messages (see proxy/core/workers.py)."""
        op = msg.get("op")
        if op == "stats":
            return {"id": msg["id"], "snapshot": snapshot(self)}
        if op == "cancel":
            self.cancel(int(msg["pid"]), int(msg["secret"]), forward=False)
        elif op == "reload":
            await self.reload()
        elif op == "reshard":
            return self.reshard.on_control(msg)  # fence.py: the supervisor relays a reshard's steps
        return None


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
