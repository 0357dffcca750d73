"""`tierproxy dbproxy`: the PostgreSQL read/write-splitting proxy daemon.

Wires the parts together: the listening socket (one `ClientSession` per client), the server pools,
the replica monitor, the classifier cache, cancel keys, the admin HTTP app (/status, /metrics,
/healthz) and the runtime hooks (SIGHUP reload, SIGTERM drain). Sessions call back into the
daemon for everything shared (see the methods under "for sessions"); no state is global.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from operator import attrgetter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client.core import Metric

from proxy import _native
from proxy.core.admin import AdminServer, admin_guard, admin_server, make_admin_app
from proxy.core.adminguard import AdminGuard
from proxy.core.config import RESTART_ONLY, parse_hostport, reload_config
from proxy.core.metrics import FuncCollector, new_registry
from proxy.core.statuspage import status_page
from proxy.core.workers import ControlChannel, WorkerSet, process_role, start_worker_channel
from proxy.pgfront.cancel import CancelKeys, route_worker_message
from proxy.pgfront.clientauth import Credentials
from proxy.pgfront.config import tls_context
from proxy.pgfront.drain import CLOSE_FLUSH_SECONDS
from proxy.pgfront.frontdaemon import FrontDaemon
from proxy.pgfront.listen import start_listener
from proxy.pgfront.login_limits import LoginLimiter
from proxy.pgfront.server import ServerConn, error_fields, send_cancel

from .books import COMPILED as BOOKS_COMPILED, Books, QueryHistogram, RouteCounts
from .causal import CommitClock, WalPosition, claim_slot, create_slots, slots_path
from .classify import ClassifierCache
from .classify_types import Decision
from .cluster_view import failover_metrics, with_worker_counters
from .config import DbProxyConfig
from .console import run_console
from .failover import FENCED_SQLSTATE, FencedPools, PatroniFollower
from .losswindow import Positions, loss_window_metrics
from .faults import replica_marked_down, restart_query_timer
from .monitor import BackendStatus, ReplicaMonitor, usable_for_reads
from .outstanding import Outstanding
from .patroni_admin import add_patroni_routes
from .router import PRIMARY, ReplicaView
from .qcache_notify import NotifyListener, start_notify_listener
from .qcache_ops import add_cache_routes, cache_snapshot, purge_local
from .qcache_session import CachingSession, QueryCache
from .session import ClientSession
from .session_router import ReplicaSessions
from .stats import collect, merge, merge_console, snapshot
from .statuspage import SERIES, render_picture

__all__ = ["DbProxyDaemon"]

log = logging.getLogger("tierproxy.dbproxy")
VERSION = "0.1"
PARSE_CACHE_SIZE = 4096  # Parse messages remembered by their bytes
PARSE_CACHE_MAX_BYTES = 4096


class DbMetrics:
    """Plain counters, exported at scrape time (proxy.core.metrics explains why)."""

    def __init__(self) -> None:
        self.routes = RouteCounts()  # (backend, RouteReason) -> statements (books.py)
        self.latency: dict[str, QueryHistogram] = {}  # role -> query latency (books.py makes them)
        self.auth_failures = 0
        self.login_failures = 0  # wrong passwords (28P01)
        self.logins_throttled = 0  # logins refused at once: their address failed too often
        self.clients_total = 0
        self.server_lost = 0
        self.cancels = 0
        self.retried = 0  # reads re-sent to another backend after theirs died unanswered

    def route_rows(self) -> list[list[Any]]:
        """[backend, reason, statements] rows, sorted: the JSON form of `routes`."""
        named = {(backend, reason.value): n for (backend, reason), n in self.routes.items()}
        return [[b, r, n] for (b, r), n in sorted(named.items())]


class DbProxyDaemon(Books, FrontDaemon):
    """The dbproxy: one per worker process. Its per-statement books (`started`, `finished`: the
    outstanding counts, latency histograms, query timer) are `Books`'s (books.py, compiled)."""

    def __init__(self, cfg: DbProxyConfig, config_path: str | Path | None = None,
                 worker_fd: int | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.config_path = config_path
        self.worker_fd = worker_fd
        self.role = process_role(worker_fd, cfg.workers, config_path)
        self.workers: WorkerSet | None = None
        self.control: ControlChannel | None = None
        self._merged: dict[str, Any] | None = None
        self.max_message_length = cfg.max_message_bytes  # for new sessions' framers
        self.creds = Credentials(cfg.auth)
        self.login_limiter = LoginLimiter(cfg.auth.max_failed_logins_per_minute)
        self.tls_context = tls_context(cfg.tls)
        self.cache = ClassifierCache(write_functions=cfg.routing.all_write_functions)
        self.qcache = QueryCache(cfg.cache) if cfg.cache.enabled else None  # qcache_session.py
        self.qnotify: NotifyListener | None = None
        self.parse_cache: dict[bytes, tuple[str, Decision]] = {}
        self.metrics = DbMetrics()
        self.route_counts = self.metrics.routes  # Books's: the session counts routes there
        # backend -> the latency histogram of its role (metrics.latency's, made at its first
        # observation as before): `finished` looks up one key per statement.
        self._latency_of: dict[str, QueryHistogram] = {}
        # cfg.timeouts.query as a plain attribute, kept by `reload`: read per statement, and a
        # pydantic model's attribute goes through its class's __getattr__ hook (~0.7k
        # instructions each, two per read: docs/perf.md).
        self.query_timeout = cfg.timeouts.query
        self.sessions: set[ClientSession] = set()
        self.closing: set[ClientSession] = set()  # ended, their FATAL still being delivered
        self.tasks: set[asyncio.Task[Any]] = set()
        # backend -> statements in flight (outstanding.py): compiled, slots whose counts the
        # books and the router read in C; the pure twin's dict operations are its fastest.
        self.outstanding: Outstanding | dict[str, int] = Outstanding() if BOOKS_COMPILED else {}
        # balance = "session": the sessions bound to each replica, kept by their routers (one
        # count per worker process: each balances its own sessions).
        self.replica_sessions = ReplicaSessions()
        self._cancel_keys = CancelKeys()
        # Where the primary and replicas are: the config's, or (topology.source "patroni") what
        # the follower last confirmed; "host:port" and (name, "host:port", weight).
        self.primary_address, self.replica_specs = self._static_backends(cfg)
        self.follower: PatroniFollower | None = None
        if cfg.topology.source == "patroni":
            self.follower = PatroniFollower(cfg.topology, login=self._monitor_login,
                                            connect_timeout=cfg.timeouts.server_connect,
                                            repoint=self.repoint, fence_old=self.fence_old,
                                            servers=lambda: self.pools.servers())  # fmt: skip
        self.pools = FencedPools(
            addresses=self._addresses(),
            login=self._server_login,
            max_per_backend=cfg.pool.max_server_connections_per_backend,
            idle_timeout=cfg.pool.idle_timeout,
            connect_timeout=cfg.timeouts.server_connect,
            wait_timeout=cfg.pool.wait_timeout,
            reuse=cfg.pool.server_reuse,
        )
        self.pools.follower = self.follower
        if self.follower is not None:
            self.follower.loss.positions = self._wal_positions  # losswindow.py
        self.monitor = self._make_monitor(cfg)
        self.clock = self._make_clock(cfg)
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self.registry.register(FuncCollector(lambda: failover_metrics(self.cluster_status())))
        self.registry.register(FuncCollector(lambda: loss_window_metrics(self.follower and self.follower.loss)))
        self.server: asyncio.base_events.Server | None = None
        self.admin: AdminServer | None = None
        self.admin_guard: AdminGuard | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started_at = time.time()

    # -- config-derived parts -------------------------------------------------------------------

    @staticmethod
    def _static_backends(cfg: DbProxyConfig) -> tuple[str, list[tuple[str, str, int]]]:
        if cfg.primary is None:
            # topology.source "patroni": nothing is known before the first confirmed leader; the
            # gate holds every use of the primary until then (failover.py), so this address of
            # the discard port is never connected for a client.
            return "127.0.0.1:9", []
        return cfg.primary.address, [(r.name, r.address, r.weight) for r in cfg.replicas]

    def _addresses(self) -> dict[str, tuple[str, int]]:
        out = {PRIMARY: parse_hostport(self.primary_address)}
        for name, address, _ in self.replica_specs:
            out[name] = parse_hostport(address)
        return out

    def _server_login(self, user: str) -> tuple[str, str | None]:
        ba = self.cfg.backend_auth
        if ba.mode == "service":
            assert ba.user is not None
            return ba.user, ba.password.get_secret_value() if ba.password is not None else None
        u = self.cfg.auth.users.get(user)
        return user, u.password.get_secret_value() if u is not None and u.password is not None else None

    def _monitor_login(self) -> tuple[str, str | None]:
        ba = self.cfg.backend_auth
        if ba.mode == "service":
            return self._server_login("")
        for name, u in self.cfg.auth.users.items():
            if u.password is not None:
                return name, u.password.get_secret_value()
        return "postgres", None

    def _make_monitor(self, cfg: DbProxyConfig) -> ReplicaMonitor:
        user, password = self._monitor_login()
        return ReplicaMonitor(
            self.primary_address, self.replica_specs,
            user=user, password=password, interval=cfg.monitor.interval,
            timeout=cfg.monitor.timeout, on_change=self._backend_changed,
        )  # fmt: skip

    def _make_clock(self, cfg: DbProxyConfig) -> CommitClock:
        """Read consistency across sessions (causal.py): its LSN fetches use a connection of the
        proxy's own to the primary, logged in like the monitor's."""
        source = None
        if self.replica_specs or self.follower is not None:
            host, port = parse_hostport(self.primary_address)
            user, password = self._monitor_login()

            async def connect() -> asyncpg.Connection:
                if not self.monitor.primary_up:
                    # Fail at once (reads that need the bound go to the primary) instead of
                    # making each of them wait for a connect timeout.
                    raise ConnectionError("the monitor has the primary down")
                return await asyncpg.connect(
                    host=host, port=port, user=user, password=password, database="postgres", ssl=False,
                    timeout=self.cfg.timeouts.server_connect, statement_cache_size=0,
                    server_settings={"application_name": "tierproxy-lsn"},
                )  # fmt: skip

            source = WalPosition(connect, cfg.timeouts.server_connect)
        return CommitClock(source, global_mode=cfg.routing.read_your_writes == "global")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Single: everything. Worker: the listener (SO_REUSEPORT) and a control channel.
        Supervisor: the admin port and the workers (see proxy/core/workers.py)."""
        loop = asyncio.get_running_loop()
        if self.follower is not None:
            self.follower.start()
            timeout = self.cfg.topology.failover_hold_timeout
            if not await self.follower.wait_confirmed(timeout):
                await self.follower.stop()
                raise RuntimeError(f"no Patroni leader confirmed within {timeout:g}s "
                                   f"({self.follower.gate.reason}; last source error: {self.follower.last_error})")
        await self.monitor.start()
        if self.role == "worker":
            try:
                self.clock.epochs.share(claim_slot(slots_path(os.getppid()), self.cfg.workers))
            except (OSError, ValueError) as exc:
                log.warning("commit counts not shared with the other workers", extra={"error": str(exc)})
        if self.role != "supervisor":
            if self.qcache is not None:
                self.qcache.start()  # the shared level, if [cache] redis (qcache_bus.py)
            session_class = CachingSession if self.qcache is not None else ClientSession
            self.qnotify = start_notify_listener(self)  # [cache.listen] (qcache_notify.py)
            self.server = await start_listener(lambda: session_class(self), self.cfg.listen,
                                               worker=self.role == "worker")  # fmt: skip
            self._sweeper = loop.create_task(self._sweep_loop())
        if self.role == "worker":
            assert self.worker_fd is not None
            self.control = await start_worker_channel(self.worker_fd, self._on_control)
            return
        if self.role == "supervisor":
            assert self.config_path is not None
            create_slots(slots_path(os.getpid()), self.cfg.workers)  # commit counts (causal.py)
            self.workers = WorkerSet(Path(self.config_path), self.cfg.workers, lambda _i: None,
                                     daemon="dbproxy", on_message=self._worker_message)  # fmt: skip
            await self.workers.start()
        self.admin_guard = admin_guard(self.cfg.admin)
        app = make_admin_app(self.registry, before_scrape=self._refresh_stats, guard=self.admin_guard,
                             series=SERIES)  # fmt: skip
        app.router.add_get("/status", self._status_handler)
        app.router.add_get("/", self._page_handler)
        add_patroni_routes(app, self)  # POST /switchover
        add_cache_routes(app, self)  # POST /cache/purge (qcache_ops.py)
        self.admin = admin_server(app, self.cfg.admin)
        try:
            await self.admin.start()
        except OSError:
            if self.server is not None:
                self.server.close()
            if self.workers is not None:
                await self.workers.stop(5.0)
            await self.monitor.stop()
            if self.follower is not None:
                await self.follower.stop()
            raise
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "workers": self.cfg.workers,
                                     "replicas": [name for name, _, _ in self.replica_specs]})  # fmt: skip

    async def reload(self) -> None:
        new = reload_config(self.config_path, DbProxyConfig, self.cfg,
                            (*RESTART_ONLY, ("[topology]", attrgetter("topology")), ("[cache]", attrgetter("cache"))))
        token = new.admin.token  # read before anything changes: a vanished file fails the reload
        creds = Credentials(new.auth)
        tls = tls_context(new.tls)  # a renewed certificate applies to new clients
        old = self.cfg
        self.cfg = new
        self.query_timeout = new.timeouts.query
        self.creds = creds
        if self.admin_guard is not None:
            self.admin_guard.update(token, new.admin.allowed_hosts)  # a token rotates with a reload
        self.login_limiter.limit = new.auth.max_failed_logins_per_minute
        self.max_message_length = new.max_message_bytes
        self.tls_context = tls
        if new.routing.all_write_functions != old.routing.all_write_functions:
            # Together: a session's memo of its last unnamed Parse (sessioncore.py's
            # `_unnamed_packet`) holds while `cache` is the classifier it was classified by.
            self.cache = ClassifierCache(write_functions=new.routing.all_write_functions)
            self.parse_cache = {}
        if self.follower is None:
            self.primary_address, self.replica_specs = self._static_backends(new)
        self._apply_addresses()
        self.pools.max_per_backend = new.pool.max_server_connections_per_backend
        self.pools.idle_timeout = new.pool.idle_timeout
        self.pools.connect_timeout = new.timeouts.server_connect
        self.pools.wait_timeout = new.pool.wait_timeout
        self.pools.reuse = new.pool.server_reuse
        if (new.primary, new.replicas, new.routing.read_your_writes, new.backend_auth) != (
            old.primary, old.replicas, old.routing.read_your_writes, old.backend_auth
        ):
            # The same clock (sessions' routers report to it), with the new primary and mode.
            fresh = self._make_clock(new)
            self.clock.reconfigure(fresh.source, global_mode=fresh.global_mode)
        self._replace_monitored()
        if self.workers is not None:
            self.workers.broadcast({"op": "reload"})
        log.info("reloaded", extra={"replicas": [name for name, _, _ in self.replica_specs]})

    def _apply_addresses(self) -> None:
        """Pools follow `primary_address` and `replica_specs`: idle connections to a backend whose
        address changed are closed."""
        addresses = self._addresses()
        for name, addr in self.pools.addresses.items():
            if addresses.get(name) != addr:
                self.pools.close_backend(name)
        self.pools.addresses = addresses

    def _replace_monitored(self) -> None:
        user, password = self._monitor_login()
        self.monitor.replace_backends(
            self.primary_address, self.replica_specs, user=user, password=password,
            interval=self.cfg.monitor.interval, timeout=self.cfg.monitor.timeout,
        )  # fmt: skip

    # -- following Patroni (failover.py) ---------------------------------------------------------

    def repoint(self, primary: str, replicas: list[tuple[str, str, int]]) -> None:
        """A confirmed leader (or a new replica set): new server connections go there, the
        monitor and the commit clock follow. No restart, no reload."""
        if (primary, replicas) == (self.primary_address, self.replica_specs):
            return
        moved = primary != self.primary_address
        self.primary_address, self.replica_specs = primary, replicas
        self._apply_addresses()
        if moved:
            fresh = self._make_clock(self.cfg)
            self.clock.reconfigure(fresh.source, global_mode=fresh.global_mode)
        self._replace_monitored()
        self._spawn(self.monitor.poll_once())  # the new primary's status now, not a poll later
        log.warning("re-pointed", extra={"primary": primary, "replicas": [n for n, _, _ in replicas]})

    def _wal_positions(self) -> Positions:
        """The monitor's last polled WAL positions (kept when a server stops answering): the
        primary's, each replica's replayed one."""
        out: dict[str, int | None] = {}
        for name in (PRIMARY, *(n for n, _, _ in self.replica_specs)):
            try:
                out[name] = self.monitor.status(name).lsn
            except KeyError:
                continue
        return out.pop(PRIMARY, None), out

    def fence_old(self, address: tuple[str, int]) -> None:
        """`address` is no longer the leader: no write may reach it. Idle pooled connections to
        it are closed; the connections sessions hold are cut, with FATAL 57P01 for those that
        end (as PostgreSQL ends sessions on a server shutting down): failover_session.py says
        which sessions move to the new primary instead, and what the others see."""
        self.pools.close_backend(PRIMARY)
        for conn in self.pools.servers():
            if conn.backend == PRIMARY and conn.address == address and not conn.closed:
                conn.fatal = error_fields("FATAL", FENCED_SQLSTATE,
                                          f"terminating connection: the primary {address[0]}:{address[1]} is no "
                                          "longer the Patroni leader (failover); reconnect")  # fmt: skip
                conn.abort()

    async def drain(self) -> None:
        if self.workers is not None:
            await self.workers.stop(self.cfg.timeouts.drain + CLOSE_FLUSH_SECONDS + 5.0)
            slots_path(os.getpid()).unlink(missing_ok=True)
        await self._drain_front()
        self.clock.close()
        if self.qnotify is not None:
            await self.qnotify.stop()
        if self.qcache is not None:
            await self.qcache.close()
        if self.follower is not None:
            await self.follower.stop()
        await self.monitor.stop()
        if self.admin is not None:
            await self.admin.stop()

    # -- for sessions ---------------------------------------------------------------------------

    def classify(self, sql: str) -> Decision:
        return self.cache.get(sql)

    def classify_query(self, sql: bytes) -> Decision:
        """`classify` for the UTF-8 text of a Query message."""
        return self.cache.get_bytes(sql)

    def remember_parse(self, raw: bytes, parsed: tuple[str, Decision]) -> None:
        """Cache a Parse message's (name, decision) by its bytes: clients re-send the same Parse
        (pgbench -M extended, unnamed statements) and this skips decoding and classifying it."""
        if len(raw) > PARSE_CACHE_MAX_BYTES:
            return
        cache = self.parse_cache
        if len(cache) >= PARSE_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[raw] = parsed

    def replica_views(self, avoid: dict[str, float]) -> Sequence[ReplicaView]:
        """The monitor's shared views (the router gets `self.outstanding` separately), with the
        replicas this session found unreachable marked down for a moment."""
        views: Sequence[ReplicaView] = self.monitor.views()
        if avoid:
            now = time.monotonic()
            for name, until in list(avoid.items()):
                if until <= now:
                    del avoid[name]
            if avoid:
                views = [ReplicaView(v.name, v.weight, False, v.lag_bytes, v.lag_seconds, v.replay_lsn,
                                     v.outstanding) if v.name in avoid else v for v in views]  # fmt: skip
        return views

    def primary_lsn(self) -> int | None:
        return self.monitor.primary_lsn

    def login_candidates(self) -> list[str]:
        """Where a new session gets its server parameters: the primary, then usable replicas."""
        out = [PRIMARY]
        for v in self.replica_views({}):
            if v.up:
                out.append(v.name)
        return out

    # -- what a session needs (proxy.pgfront.session.FrontendServices) ---------------------------

    def console_params(self, user: str) -> dict[str, str]:
        return {
            "server_version": f"15.0 (tierproxy dbproxy {VERSION})", "server_encoding": "UTF8",
            "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "integer_datetimes": "on",
            "standard_conforming_strings": "on", "TimeZone": "UTC", "IntervalStyle": "postgres",
            "is_superuser": "off", "session_authorization": user, "application_name": "",
        }  # fmt: skip

    def cancel(self, pid: int, secret: int, *, forward: bool = True) -> None:
        session = self._cancel_keys.get(pid, secret)
        if session is None:
            if forward and self.control is not None:
                # Another worker may have issued it: the supervisor asks them all.
                self.control.send({"op": "cancel", "pid": pid, "secret": secret})
            return  # PostgreSQL too ignores a cancel with an unknown key, silently
        self.metrics.cancels += 1
        for conn in session.cancel_targets():
            self.cancel_conn(conn)

    def restart_query_timer(self, conn: ServerConn) -> None:
        """A ReadyForQuery with more in flight on `conn` (timer running): the next statement
        gets the whole of timeouts.query (faults.py)."""
        restart_query_timer(self, conn)

    def cancel_conn(self, conn: ServerConn) -> None:
        """Ask the server to cancel what `conn` runs (a CancelRequest on a new connection)."""
        self._spawn(send_cancel(conn.address, conn.pid, conn.secret))

    def _forget(self, conn: ServerConn) -> None:
        """Take a connection out of the books (outstanding count, query timer) and close it."""
        if conn.counted:
            conn.counted = False
            self.outstanding[conn.backend] -= 1
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self.pools.discard(conn)

    def session_ended(self, session: Any) -> None:
        super().session_ended(session)
        session.router.release()  # its replica's count of sessions

    def server_lost(self, conn: ServerConn) -> None:
        self.metrics.server_lost += 1
        self._forget(conn)

    def release_server(self, conn: ServerConn) -> None:
        if conn.busy:
            # The client left mid-statement: stop the work, then drop the connection.
            self.cancel_conn(conn)
            conn.set_attached(None)
            self._forget(conn)
            return
        self._spawn(self.pools.release(conn))

    def _backend_changed(self, name: str, status: BackendStatus) -> None:
        if status.up:
            log.warning("backend up", extra={"backend": name, "in_recovery": status.in_recovery})
        else:
            log.warning("backend down", extra={"backend": name, "error": status.last_error})
            self.pools.close_backend(name)
            replica_marked_down(self, name)  # faults.py: reads waiting on it go elsewhere now

    # -- admin ----------------------------------------------------------------------------------

    def console(self, sql: str) -> bytes:
        """The admin console's answer to `sql`, from this process's state."""
        return run_console(sql, self.console_snapshot())

    @property
    def console_is_local(self) -> bool:
        """A worker's console needs the supervisor (`console_async`): SHOW covers all workers."""
        return self.control is None

    async def console_async(self, sql: str) -> bytes:
        """`console` for a worker: the supervisor gathers every worker's state, so SHOW CLIENTS
        lists the clients of all of them. If the supervisor does not answer, this worker's own."""
        assert self.control is not None
        try:
            reply = await self.control.request({"op": "console"})
            snap = reply["console"]
        except (TimeoutError, KeyError):
            log.warning("console: no answer from the supervisor; showing this worker only")
            snap = self.console_snapshot()
        return run_console(sql, snap)

    def _backends(self, outstanding: dict[str, int] | None = None,
                  sessions: dict[str, int] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """The monitor's rows with the outstanding queries and (replicas) the sessions bound:
        this process's, or the workers' sums when given."""
        r = self.cfg.routing
        outstanding = self.outstanding if outstanding is None else outstanding
        sessions = self.replica_sessions.counts if sessions is None else sessions
        out = []
        for st in self.monitor.statuses():
            row = st.to_json()
            row["outstanding"] = outstanding.get(st.name, 0)
            if st.name == PRIMARY:
                row["usable"] = st.up and st.role_ok
            else:
                row["weight"] = st.weight
                row["usable"] = usable_for_reads(st, r.max_lag_bytes, r.max_lag_seconds)
                row["sessions"] = sessions.get(st.name, 0)
            out.append(row)
        return out

    def pool_rows(self) -> list[dict[str, Any]]:
        """SHOW POOLS rows: server connections by state plus the clients holding them."""
        clients_per_key: dict[tuple[str, str, str], int] = {}
        for s in self.sessions:
            for backend in s.servers:
                k = (backend, s.user, s.database)
                clients_per_key[k] = clients_per_key.get(k, 0) + 1
        pools = self.pools.snapshot()
        for p in pools:
            p["clients"] = clients_per_key.get((p["backend"], p["user"], p["database"]), 0)
            p["waiting"] = self.pools.waiting(p["backend"])
        return pools

    def console_snapshot(self) -> dict[str, Any]:
        clients = []
        for s in self.sessions:
            host, port = (s.transport.get_extra_info("peername") or ("", 0))[:2] if s.transport else ("", 0)
            clients.append({
                "user": s.user, "database": s.database, "state": s.phase, "addr": host, "port": port,
                "connect_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.connected_at)),
                "statements": s.statements_run, "in_transaction": s.router.in_transaction,
                "transaction_backend": s.router.transaction_backend, "pinned": s.router.pinned,
                "replica": s.router.replica,
                "last_backend": s.last_route.target if s.last_route else None,
                "last_reason": s.last_route.reason.value if s.last_route else None,
                "servers": sorted(s.servers), "tls": s.tls,
            })  # fmt: skip
        pools = self.pool_rows()
        servers = []
        for c in self.pools.servers():
            sess = c.session
            peer = sess.transport.get_extra_info("peername") if sess and sess.transport else None
            servers.append({
                "backend": c.backend, "role": "primary" if c.backend == PRIMARY else "replica",
                "user": c.key[1], "database": c.key[2],
                "state": "closed" if c.closed else ("active" if sess else "idle"),
                "addr": c.address[0], "port": c.address[1], "pid": c.pid,
                "connect_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.created_at)),
                "client_addr": peer[0] if peer else None, "client_port": peer[1] if peer else None,
                "prepared": len(c.prepared), "tx_status": c.status.decode(),
            })  # fmt: skip
        return {"pools": pools, "servers": servers, "clients": clients, "backends": self._backends(),
                "routes": self.metrics.route_rows(), "cluster": self.cluster_status(),
                "version": VERSION, "qcache": cache_snapshot(self.qcache)}  # fmt: skip

    def cluster_status(self) -> dict[str, Any] | None:
        """/status's `topology` (SHOW CLUSTER, the failover metrics); None with a static topology."""
        if self.follower is None:
            return None
        status = self.follower.status()
        if self.role == "supervisor" and self._merged is not None and self._merged.get("failover"):
            status = with_worker_counters(status, self._merged["failover"])  # the workers hold the clients
        return status

    async def _status_handler(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.status_body())

    async def _page_handler(self, request: web.Request) -> web.Response:
        return status_page(request, "dbproxy", *render_picture(await self.status_body()))

    async def status_body(self) -> dict[str, Any]:
        await self._refresh_stats()
        snap = self._merged if self.role == "supervisor" and self._merged is not None else snapshot(self)
        body = {"version": VERSION, "uptime": round(time.time() - self.started_at, 3),
                "workers": self.cfg.workers, "backends": self._backends(snap["outstanding"], snap["replica_sessions"]),
                "clients": snap["clients"], "pools": snap["pools"], "ready": self.monitor.ready,
                "classifier_cache": snap["cache"], "native": _native.status()}  # fmt: skip
        if self.follower is not None:
            body["topology"] = self.cluster_status()
        return body

    def _collect(self) -> Iterable[Metric]:
        snap = self._merged if self.role == "supervisor" and self._merged is not None else snapshot(self)
        return collect(snap, self._backends(snap["outstanding"], snap["replica_sessions"]))

    # -- workers ----------------------------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        """Supervisor, before a scrape or /status: gather and merge the workers' counters."""
        if self.workers is not None:
            self._merged = merge(await self.workers.snapshots())

    def _worker_message(self, index: int, msg: dict[str, Any]) -> None:
        """Supervisor: a worker got a CancelRequest for a key it did not issue (ask them all), or
        a console query that needs every worker's state (proxy/pgfront/cancel.py)."""
        if self.workers is not None:
            route_worker_message(self.workers, index, msg,
                                 lambda i, rid: self._spawn(self._answer_console(i, rid)))

    async def _answer_console(self, index: int, rid: int) -> None:
        assert self.workers is not None
        snaps = [reply["console"] for reply in await self.workers.ask("console")]
        merged = merge_console(snaps, self._backends({}, {})) | {"cluster": self.cluster_status()}
        self.workers.send_to(index, {"rid": rid, "console": merged})

    async def _on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Worker: the supervisor's messages (see proxy/core/workers.py)."""
        op = msg.get("op")
        if op == "stats":
            return {"id": msg["id"], "snapshot": snapshot(self)}
        if op == "console":
            return {"id": msg["id"], "console": self.console_snapshot()}
        if op == "cache-purge":
            tables = msg.get("tables")
            return {"id": msg["id"], "enabled": self.qcache is not None,
                    "dropped": purge_local(self, None if tables is None else frozenset(tables))}
        if op == "cancel":
            self.cancel(int(msg["pid"]), int(msg["secret"]), forward=False)
        elif op == "reload":
            await self.reload()
        return None
