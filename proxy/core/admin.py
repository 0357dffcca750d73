"""Admin HTTP app factory: every daemon serves /metrics and /healthz here, plus its own routes.

The admin API runs on aiohttp (control plane, not the data path) on its own port, loopback unless
the config says otherwise. Given an `AdminGuard` (proxy/core/adminguard.py), every request passes
its Host/Origin checks and mutating ones its content-type and token checks first.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.core.adminguard import AdminGuard, is_loopback_host
from proxy.core.config import AdminTlsConfig, parse_hostport
from proxy.core.metrics import CONTENT_TYPE_LATEST, render
from proxy.core.series import Series, SeriesRecorder, install
from proxy.core.tls import intermediate_context

__all__ = ["RECORDER", "AdminServer", "admin_guard", "admin_server", "make_admin_app"]

RECORDER = web.AppKey("series_recorder", SeriesRecorder)


def _guard_middleware(guard: AdminGuard) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guarded(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        h = request.headers
        refusal = guard.check(request.method, h.get("Host"), h.get("Origin"), h.get("Content-Type"),
                              h.get("Authorization"))  # fmt: skip
        if refusal is None:
            return await handler(request)
        status, reason = refusal
        resp = web.Response(text=json.dumps({"error": reason}) + "\n", status=status,
                            content_type="application/json")  # fmt: skip
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="tierproxy admin"'
        return resp

    return guarded


class AdminSettings(Protocol):
    """A daemon's [admin] table (an `AdminTokenConfig` with its `address` and `tls`)."""

    address: str
    tls: AdminTlsConfig | None
    allowed_hosts: list[str]

    @property
    def token(self) -> str | None: ...


def admin_guard(admin: AdminSettings) -> AdminGuard:
    """The guard for a daemon's [admin] table. Beyond loopback (config.py insists on TLS plus
    client certificates or a token there) a token guards reads too: /status and /metrics show the
    daemon's servers and their addresses."""
    host = parse_hostport(admin.address)[0]
    return AdminGuard(host, admin.token, admin.allowed_hosts, scheme="https" if admin.tls else "http",
                      token_for_reads=not is_loopback_host(host))  # fmt: skip


def admin_server(app: web.Application, admin: AdminSettings) -> AdminServer:
    """`app` served on [admin] address, over TLS when [admin.tls] is set."""
    tls = admin.tls
    ssl_context = None if tls is None else intermediate_context(tls.cert_file, tls.key_file,
                                                                client_ca_file=tls.client_ca_file)  # fmt: skip
    return AdminServer(app, admin.address, ssl_context)


def make_admin_app(
    registry: CollectorRegistry, before_scrape: Callable[[], Awaitable[None]] | None = None,
    guard: AdminGuard | None = None, series: Sequence[Series] = (),
) -> web.Application:
    """An aiohttp app with /metrics and /healthz; daemons add their routes to it.

    `before_scrape` runs before each /metrics render: a daemon with worker processes gathers
    their counters there, since collectors themselves cannot await. `guard`: who may use the API
    from where (proxy/core/adminguard.py). `series`: the status page's graphs, recorded from the
    registry while the app runs and served at /status/series (proxy/core/series.py); the
    recorder is `app[RECORDER]`."""
    middlewares = [_guard_middleware(guard)] if guard is not None else []
    app = web.Application(client_max_size=1 << 20, middlewares=middlewares)

    async def metrics(_request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        body = render(registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if series:
        recorder = SeriesRecorder(registry, series, before_scrape)
        app[RECORDER] = recorder
        install(app, recorder)
    return app


class AdminServer:
    """Runs an admin app on one address; `start`/`stop` bracket the daemon's life."""

    def __init__(self, app: web.Application, address: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.host, self.port = parse_hostport(address)
        self.ssl_context = ssl_context  # TLS on the admin port (the lb's [admin.tls])
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True,
                           ssl_context=self.ssl_context)  # fmt: skip
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
