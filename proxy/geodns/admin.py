"""The geo-DNS admin API and status page (on the shared admin app from proxy.core.admin).

    GET  /status                         JSON: data centers (health, targets, drained), names, counters
    GET  /                               HTML status page: data centers, live graphs
    GET  /status/series                  the graphs' points (proxy/core/series.py)
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

from proxy.core.series import Series
from proxy.core.statuspage import badge, status_page, table

if TYPE_CHECKING:
    from proxy.geodns.daemon import GeoDnsDaemon

__all__ = ["SERIES", "add_admin_routes", "render_picture"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", status=status, content_type="application/json")


def add_admin_routes(app: web.Application, daemon: GeoDnsDaemon) -> None:
    async def status(_request: web.Request) -> web.Response:
        return _json(await daemon.status_async())

    async def page(_request: web.Request) -> web.Response:
        return status_page(_request, "geodns", *render_picture(await daemon.status_async()))

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


SERIES = (
    Series("queries", "queries", "rate", ("tierproxy_geodns_queries_total",)),
    Series("servfail", "SERVFAIL + dropped", "rate", ("tierproxy_geodns_responses_total", "tierproxy_geodns_dropped_total"),
           where=(("rcode", ("SERVFAIL", None)),)),  # dropped_total has no rcode label
    Series("cache_hit_ratio", "answer cache hit ratio", "ratio", ("tierproxy_geodns_cache_hits_total",), unit="",
           denominator=("tierproxy_geodns_cache_misses_total",)),
)  # fmt: skip


def render_picture(st: dict[str, Any]) -> tuple[str, str]:
    """The page's summary and picture: data centers (state and why), names and their policies."""
    e = html.escape
    c = st["counters"]
    rows, classes = [], []
    for name, dc in st["datacenters"].items():
        state = "drained" if dc["drained"] else "up" if dc["healthy"] else "down"
        failing = [t for t in dc["targets"] if not t["up"]]
        why = ("drained by an operator" if dc["drained"] else
               "; ".join(f"{t['type']} {t['target']}: {t['reason'] or t['last']}" for t in failing))  # fmt: skip
        targets = "<br>".join(f"{e(t['type'])} {e(str(t['target']))}: {'up' if t['up'] else 'down'} "
                              f"{e(str(t['reason'] or t['last'] or ''))}" for t in dc["targets"]) or "none"  # fmt: skip
        answered = c["datacenters"].get(name, 0)
        rows.append([e(name), badge(state), f"<span class='why'>{e(why)}</span>", e(", ".join(dc["addresses"])),
                     targets, str(answered)])  # fmt: skip
        classes.append("s-down" if state == "down" else "")
    names = []
    for name, pol in st["names"].items():
        detail = json.dumps({k: v for k, v in pol.items() if v and k not in ("policy",)})
        names.append([e(name), e(pol["policy"]), f"<code>{e(detail)}</code>"])
    summary = (f"listen {e(st['listen'])} &middot; zones {e(', '.join(st['zones']))} &middot; "
               f"fail_open {st['fail_open']} &middot; queries {sum(c['queries'].values())} &middot; "
               f"cache hits {c['cache_hits']}")  # fmt: skip
    picture = ("<h2>data centers</h2>"
               + table(["name", "state", "why", "addresses", "health targets", "answers"], rows,
                       ident="datacenters", row_classes=classes)
               + "<h2>names</h2>" + table(["name", "policy", "rules"], names, ident="names")
               + "<p>Which answer a client gets, and why: <code>/explain?client=203.0.113.7</code>.</p>")  # fmt: skip
    return summary, picture
