"""The load balancer's admin API and status page (on the shared admin app from proxy.core.admin).

    GET    /status                                  JSON: pools, backends, health and why out
    GET    /                                        HTML status page, refreshes itself
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
from proxy.lb.config import BackendConfig
from proxy.lb.netpolicy import address_refusal, resolved_refusal

if TYPE_CHECKING:
    from proxy.lb.daemon import LbDaemon

__all__ = ["add_admin_routes", "render_status_page"]

_STATE_COLOURS = {"up": "#c9f0c9", "down": "#f5b7b1", "ejected": "#f9d9a6", "draining": "#d6e4f5"}


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
        return web.Response(text=render_status_page(await daemon.status_async()), content_type="text/html")

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


def render_status_page(status: dict[str, Any], refresh_s: int = 2) -> str:
    """An HTML page in the spirit of HAProxy's stats page: one table per pool."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{refresh_s}'>",
        "<title>tierproxy lb status</title><style>",
        "body{font:13px sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}",
        "th,td{border:1px solid #999;padding:3px 7px;text-align:right}th{background:#ddd}",
        "td.l{text-align:left}h2{margin:.6em 0 .2em}",
        "</style></head><body>",
        "<h1>tierproxy lb</h1>",
        f"<p>listen {e(status['listen'])} &middot; uptime {status['uptime_s']:.0f}s &middot; "
        f"client connections {status['client_connections']} &middot; "
        f"requests {status['requests']}{' &middot; <b>DRAINING</b>' if status['draining'] else ''}</p>",
    ]
    for pname, pool in status["pools"].items():
        parts.append(
            f"<h2>pool {e(pname)}</h2><p>{e(pool['algorithm'])}, {e(pool['mode'])}, "
            f"health check {e(pool['health_check'])}, retries {pool['retries']}, "
            f"no-backend answers {pool['no_backend']}</p>"
        )
        parts.append(
            "<table><tr><th>backend</th><th>address</th><th>weight</th><th>state</th>"
            "<th>why</th><th>in flight</th><th>requests</th><th>2xx</th><th>4xx</th><th>5xx</th>"
            "<th>failures</th><th>ejections</th><th>conns open/idle</th></tr>"
        )
        for b in pool["backends"]:
            colour = _STATE_COLOURS.get(b["state"], "#fff")
            failures = ", ".join(f"{k} {v}" for k, v in sorted(b["failures"].items())) or "0"
            name = e(b["name"]) + (" (backup)" if b["backup"] else "")
            parts.append(
                f"<tr style='background:{colour}'><td class='l'>{name}</td>"
                f"<td class='l'>{e(b['address'])}</td><td>{b['weight']}</td>"
                f"<td class='l'>{e(b['state'])}</td><td class='l'>{e(b['reason'])}</td>"
                f"<td>{b['inflight']}</td><td>{b['requests']}</td><td>{b['responses']['2xx']}</td>"
                f"<td>{b['responses']['4xx']}</td><td>{b['responses']['5xx']}</td>"
                f"<td class='l'>{e(failures)}</td><td>{b['ejections']}</td>"
                f"<td>{b['open_connections']}/{b['idle_connections']}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
