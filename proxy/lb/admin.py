"""The load balancer's admin API and status page (on the shared admin app from proxy.core.admin).

    GET    /status                                  JSON: pools, backends, health and why out
    GET    /                                        HTML status page: pools, backends, live graphs
    GET    /status/series                           the graphs' points (proxy/core/series.py)
    POST   /pools/{pool}/backends                   add: {"name", "address", "weight", "backup"}
    POST   /pools/{pool}/backends/{name}/drain      no new requests; in-flight ones finish
    POST   /pools/{pool}/backends/{name}/enable     undo drain
    DELETE /pools/{pool}/backends/{name}            remove now (in-flight ones finish)
    POST   /reload                                  same as SIGHUP

Runtime changes live until the next reload, which makes the config file authoritative again
(HAProxy's runtime API behaves the same way). Every request passes the admin guard first
(proxy/core/adminguard.py: Host/Origin checks; changes need JSON and, with admin.token_file, a
bearer token); an added backend's address must pass allowed_backend_networks (lb/netpolicy.py).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from proxy import _native
from proxy.core.config import format_loc, parse_hostport
from proxy.core.series import Series
from proxy.core.statuspage import badge, status_page, table
from proxy.lb.config import BackendConfig
from proxy.lb.netpolicy import address_refusal, resolved_refusal

if TYPE_CHECKING:
    from proxy.lb.daemon import LbDaemon

__all__ = ["SERIES", "add_admin_routes", "render_picture"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2) + "\n", status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def backend_address_refusal(address: str, allowed: Any) -> str | None:
    """Why `address` may not be a backend (lb/netpolicy.py); a name is resolved off the loop."""
    host = parse_hostport(address)[0]
    if _is_literal(host):
        return address_refusal(host, allowed)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # does not resolve now: connecting fails and the health check says why
    return resolved_refusal(host, (str(i[4][0]) for i in infos), allowed)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def add_admin_routes(app: web.Application, daemon: LbDaemon) -> None:
    async def status(_request: web.Request) -> web.Response:
        return _json({**await daemon.status_async(), "native": _native.status()})

    async def page(_request: web.Request) -> web.Response:
        return status_page(_request, "lb", *render_picture(await daemon.status_async()))

    def _pool(request: web.Request) -> Any:
        name = request.match_info["pool"]
        pool = daemon.pools.get(name)
        if pool is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no pool named {name!r}"}), content_type="application/json"
            )
        return pool

    def _backend_name(request: web.Request, pool: Any) -> str:
        name = request.match_info["name"]
        if name not in pool.backends:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"pool {pool.name!r} has no backend {name!r}"}),
                content_type="application/json",
            )
        return name

    async def add_backend(request: web.Request) -> web.Response:
        pool = _pool(request)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body must be a JSON object")
        try:
            bcfg = BackendConfig.model_validate(body)
        except ValidationError as exc:
            msgs = [f"{format_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
            return _error(400, "; ".join(msgs))
        why = await backend_address_refusal(bcfg.address, daemon.cfg.backend_networks)
        if why is not None:
            return _error(403, f"address: {why}")
        try:
            backend = daemon.add_backend(pool.name, bcfg)
        except ValueError as exc:
            return _error(409, str(exc))
        return _json({"added": backend.name, "pool": pool.name}, 201)

    async def drain(request: web.Request) -> web.Response:
        pool = _pool(request)
        name = _backend_name(request, pool)
        b = daemon.set_draining(pool.name, name, True)
        return _json({"draining": name, "inflight": b.inflight})

    async def enable(request: web.Request) -> web.Response:
        pool = _pool(request)
        name = _backend_name(request, pool)
        daemon.set_draining(pool.name, name, False)
        return _json({"enabled": name})

    async def remove(request: web.Request) -> web.Response:
        pool = _pool(request)
        name = _backend_name(request, pool)
        daemon.remove_backend(pool.name, name)
        return _json({"removed": name})

    async def reload(_request: web.Request) -> web.Response:
        try:
            await daemon.reload()
        except Exception as exc:  # the running config stays; tell the operator why
            return _error(400, str(exc))
        return _json({"reloaded": True})

    app.router.add_get("/status", status)
    app.router.add_get("/", page)
    app.router.add_post("/pools/{pool}/backends", add_backend)
    app.router.add_post("/pools/{pool}/backends/{name}/drain", drain)
    app.router.add_post("/pools/{pool}/backends/{name}/enable", enable)
    app.router.add_delete("/pools/{pool}/backends/{name}", remove)
    app.router.add_post("/reload", reload)


# The page's graphs (proxy/core/series.py), read from the lb's own /metrics families.
SERIES = (
    Series("requests", "requests", "rate", ("tierproxy_lb_requests_total",)),
    Series("errors", "errors", "rate",  # the balancer's own 502/503/504 and 4xx refusals
           ("tierproxy_lb_proxy_errors_total", "tierproxy_lb_client_errors_total")),
    Series("backend_5xx", "backend 5xx", "rate", ("tierproxy_lb_backend_responses_total",),
           where=(("class", ("5xx",)),)),
    Series("latency_p95", "backend latency p95", "quantile", ("tierproxy_lb_backend_response_seconds",),
           unit="ms", scale=1000.0),
)  # fmt: skip


def render_picture(status: dict[str, Any]) -> tuple[str, str]:
    """The page's summary line and picture: one table per pool, a backend's state and why."""
    e = html.escape
    summary = (f"listen {e(str(status['listen']))} &middot; uptime {status['uptime_s']:.0f}s &middot; "
               f"client connections {status['client_connections']} &middot; requests {status['requests']}"
               f"{' &middot; <b>DRAINING</b>' if status['draining'] else ''}")  # fmt: skip
    parts = []
    for pname, pool in status["pools"].items():
        backends = pool["backends"]
        eligible = sum(1 for b in backends if b["state"] == "up")
        parts.append(
            f"<h2>pool {e(pname)} <small>{eligible} of {len(backends)} up</small></h2>"
            f"<p>{e(pool['algorithm'])}, {e(pool['mode'])}, health check {e(pool['health_check'])}, "
            f"retries {pool['retries']}, no-backend answers {pool['no_backend']}</p>"
        )
        rows, classes = [], []
        for b in backends:
            failures = ", ".join(f"{k} {v}" for k, v in sorted(b["failures"].items())) or "0"
            rows.append([
                e(b["name"]) + (" (backup)" if b["backup"] else ""), e(b["address"]), str(b["weight"]),
                badge(b["state"]), f"<span class='why'>{e(b['reason'] or '')}</span>", str(b["inflight"]),
                str(b["requests"]), str(b["responses"]["2xx"]), str(b["responses"]["4xx"]),
                str(b["responses"]["5xx"]), e(failures), str(b["ejections"]),
                f"{b['open_connections']}/{b['idle_connections']}",
            ])  # fmt: skip
            classes.append(f"s-{b['state']}" if b["state"] in ("down", "ejected") else "")
        parts.append(table(["backend", "address", "weight", "state", "why", "in flight", "requests", "2xx",
                            "4xx", "5xx", "failures", "ejections", "conns open/idle"], rows,
                           ident=f"pool-{pname}", row_classes=classes))  # fmt: skip
    return summary, "".join(parts)
