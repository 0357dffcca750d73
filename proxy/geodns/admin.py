"""The geo-DNS admin API and status page (on the shared admin app from proxy.core.admin).

    GET  /status                         JSON: data centers (health, targets, drained), names, counters
    GET  /                               HTML status page, refreshes itself
    GET  /explain?client=203.0.113.7     which answer that client network gets for each name, and why
    POST /datacenters/{dc}/drain         leave the data center out of answers (lower TTLs meanwhile)
    POST /datacenters/{dc}/undrain       take it back
    POST /reload                         same as SIGHUP

Every request passes the admin guard first (proxy/core/adminguard.py). Drains last until the next
reload, which makes the config file authoritative again.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from proxy.geodns.daemon import GeoDnsDaemon

__all__ = ["add_admin_routes", "render_status_page"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", status=status, content_type="application/json")


def add_admin_routes(app: web.Application, daemon: GeoDnsDaemon) -> None:
    async def status(_request: web.Request) -> web.Response:
        return _json(await daemon.status_async())

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=render_status_page(await daemon.status_async()), content_type="text/html")

    async def explain(request: web.Request) -> web.Response:
        client = request.query.get("client")
        if not client:
            return _json({"error": "explain needs ?client=<address or CIDR>"}, 400)
        try:
            return _json(daemon.engine.explain(client))
        except ValueError as exc:
            return _json({"error": f"client: {exc}"}, 400)

    def _drain(drained: bool) -> Any:
        async def handler(request: web.Request) -> web.Response:
            dc = request.match_info["dc"]
            try:
                daemon.set_drained(dc, drained)
            except KeyError:
                return _json({"error": f"no data center named {dc!r}"}, 404)
            return _json({"datacenter": dc, "drained": drained,
                          "available": sorted(daemon.engine.available)})  # fmt: skip

        return handler

    async def reload(_request: web.Request) -> web.Response:
        try:
            await daemon.reload()
        except Exception as exc:  # a bad file keeps the running config; say why
            return _json({"error": str(exc)}, 400)
        return _json({"reloaded": True})

    app.router.add_get("/status", status)
    app.router.add_get("/", page)
    app.router.add_get("/explain", explain)
    app.router.add_post("/datacenters/{dc}/drain", _drain(True))
    app.router.add_post("/datacenters/{dc}/undrain", _drain(False))
    app.router.add_post("/reload", reload)


def render_status_page(st: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for name, dc in st["datacenters"].items():
        state = "drained" if dc["drained"] else "up" if dc["healthy"] else "down"
        colour = {"up": "#c9f0c9", "down": "#f5b7b1", "drained": "#d6e4f5"}[state]
        targets = "<br>".join(f"{e(t['type'])} {e(str(t['target']))}: {'up' if t['up'] else 'down'} "
                              f"{e(t['reason'] or t['last'])}" for t in dc["targets"]) or "none"  # fmt: skip
        answered = st["counters"]["datacenters"].get(name, 0)
        rows.append(f"<tr style='background:{colour}'><td>{e(name)}</td><td>{state}</td>"
                    f"<td>{e(', '.join(dc['addresses']))}</td><td>{targets}</td><td>{answered}</td></tr>")  # fmt: skip
    names = []
    for name, pol in st["names"].items():
        detail = json.dumps({k: v for k, v in pol.items() if v and k not in ("policy",)})
        names.append(f"<tr><td>{e(name)}</td><td>{e(pol['policy'])}</td><td><code>{e(detail)}</code></td></tr>")
    c = st["counters"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>tierproxy geodns</title><style>body{{font-family:sans-serif}}td,th{{padding:4px 8px;border:1px solid #ccc}}
table{{border-collapse:collapse;margin-bottom:1em}}</style></head><body>
<h1>tierproxy geodns</h1><p>listen {e(st['listen'])} &middot; zones {e(', '.join(st['zones']))} &middot;
fail_open {st['fail_open']} &middot; queries {sum(c['queries'].values())} &middot; cache hits {c['cache_hits']}</p>
<h2>Data centers</h2><table><tr><th>name</th><th>state</th><th>addresses</th><th>health targets</th>
<th>answers</th></tr>{''.join(rows)}</table>
<h2>Names</h2><table><tr><th>name</th><th>policy</th><th>rules</th></tr>{''.join(names)}</table>
<p>Try <code>/explain?client=203.0.113.7</code>.</p></body></html>
"""
