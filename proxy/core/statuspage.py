"""The status pages' shared frame: every daemon's admin `/` is `render_page(...)` around its picture.

A page is one self-contained HTML document: inline style, one inline script of ours (no
framework, nothing fetched from another origin), and a Content-Security-Policy that allows
exactly that script (by its hash), fetches to the admin's own origin and nothing else. It shows

* a summary line and the daemon's picture (its backends, servers, shards or data centers, each
  with its state and why), rendered by the daemon with every name escaped here or there by
  `html.escape`, and
* small graphs (inline SVG) of the series the daemon records (proxy/core/series.py), drawn on the
  server too, so the page reads without JavaScript (it then reloads itself every 5 s).

The script draws the graphs from the series embedded in the page as soon as it loads (each
graph's <svg> gets `data-drawn="<points>"`), then every interval fetches /status/series and the
page itself, redraws the graphs and swaps the summary and picture in place. It builds nothing
from strings into markup: the picture comes from our own page, parsed by DOMParser.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from proxy.core.admin import RECORDER

__all__ = ["CSP", "badge", "page_response", "render_page", "sparkline_path", "status_page", "table"]

W, H = 300.0, 60.0  # the graphs' viewBox

SCRIPT = r"""
(function () {
  "use strict";
  var W = 300, H = 60;
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
  }
  function span(pts, windowS) {
    // Until the ring is full, the graph spans what there is (at least a minute), not the window.
    return pts.length ? Math.min(windowS, Math.max(60, -pts[0][0])) : windowS;
  }
  function draw(svg, s, windowS) {
    var pts = s.points, max = 0, i, d = "", pen = false, n = 0, last = null;
    windowS = span(pts, windowS);
    for (i = 0; i < pts.length; i++) if (pts[i][1] !== null && pts[i][1] > max) max = pts[i][1];
    var top = max > 0 ? max * 1.15 : 1;
    for (i = 0; i < pts.length; i++) {
      var v = pts[i][1];
      if (v === null) { pen = false; continue; }
      var x = W * (1 + pts[i][0] / windowS), y = H - (v / top) * H;
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true; n++; last = v;
    }
    svg.querySelector("path.line").setAttribute("d", d);
    svg.setAttribute("data-drawn", String(n));
    var fig = svg.parentNode;
    var now = fig.querySelector(".now"), peak = fig.querySelector(".peak");
    if (now) now.textContent = fmt(last);
    if (peak) peak.textContent = fmt(max);
  }
  function drawAll(data) {
    for (var i = 0; i < data.series.length; i++) {
      var s = data.series[i], svg = document.getElementById("graph-" + s.key);
      if (svg) draw(svg, s, data.window_s);
    }
  }
  function swap(doc, id) {
    var fresh = doc.getElementById(id), old = document.getElementById(id);
    if (fresh && old) old.replaceWith(document.importNode(fresh, true));
  }
  function stamp(ok) {
    var u = document.getElementById("updated");
    if (u) u.textContent = ok ? "updated " + new Date().toLocaleTimeString() : "not updated: admin unreachable";
  }
  var refreshes = 0;
  function refresh() {
    fetch("/status/series", {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (data) {
        drawAll(data); stamp(true);
        document.body.setAttribute("data-refreshes", String(++refreshes));
      }, function () { stamp(false); });
    fetch(window.location.pathname, {cache: "no-store"}).then(function (r) { return r.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        swap(doc, "summary"); swap(doc, "picture");
      }, function () {});
  }
  var embedded = document.getElementById("series-data");
  var data = JSON.parse(embedded.textContent);
  drawAll(data);
  stamp(true);
  setInterval(refresh, Math.max(1, data.interval_s) * 1000);
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = ("default-src 'none'; " f"script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_STYLE = """
body{font:14px/1.35 system-ui,sans-serif;margin:1.2em 1.6em;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.1em 0 .3em}
.summary{color:#444;margin:.2em 0 .8em}
.graphs{display:flex;flex-wrap:wrap;gap:14px;margin:.4em 0 .6em}
figure.graph{margin:0;padding:8px 10px;background:#fff;border:1px solid #ccc;border-radius:6px;width:250px}
figcaption{font-size:.9em;color:#555;display:flex;justify-content:space-between}
figcaption .now{font-size:1.5em;color:#111;font-weight:600}
svg.spark{width:100%;height:60px;display:block;background:linear-gradient(#f3f6fa,#fff)}
svg.spark path.line{fill:none;stroke:#2a6fb0;stroke-width:1.6;vector-effect:non-scaling-stroke}
svg.spark path.base{stroke:#bbb;stroke-width:1}
.graph small{color:#777}
table{border-collapse:collapse;margin:.2em 0 1em;background:#fff}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-weight:600;font-size:.9em}
.s-up,.s-usable,.s-connected,.s-leader{background:#c9f0c9;color:#114d11}
.s-down,.s-unusable{background:#f5b7b1;color:#6e1010}
.s-ejected,.s-lagging,.s-stale{background:#f9d9a6;color:#5c3a00}
.s-draining,.s-drained,.s-idle,.s-removed{background:#d6e4f5;color:#12365c}
tr.s-down td{background:#fdecea}
.why{color:#6e1010}
footer{margin-top:1.2em;color:#666;font-size:.9em}
"""


def sparkline_path(points: Sequence[Sequence[Any]], window_s: float) -> tuple[str, int]:
    """The SVG path the script draws for `points` ([age_s, value|None], oldest first), and how
    many points it has: the same drawing, made on the server for a page read without JavaScript."""
    values = [p[1] for p in points if p[1] is not None]
    top = max(values) * 1.15 if values and max(values) > 0 else 1.0
    if points:  # until the ring is full, the graph spans what there is (at least a minute)
        window_s = min(window_s, max(60.0, -points[0][0]))
    d, pen, n = [], False, 0
    for age, value in points:
        if value is None:
            pen = False
            continue
        x = W * (1 + age / window_s) if window_s else W
        d.append(f"{'L' if pen else 'M'}{x:.1f} {H - value / top * H:.1f}")
        pen, n = True, n + 1
    return "".join(d), n


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def _graph(s: dict[str, Any], window_s: float) -> str:
    e = html.escape
    d, _n = sparkline_path(s["points"], window_s)
    values = [p[1] for p in s["points"] if p[1] is not None]
    last = values[-1] if values else None
    peak = max(values) if values else None
    return (f"<figure class='graph'><figcaption><span>{e(s['title'])} <small>{e(s['unit'])}</small></span>"
            f"<span class='now'>{_fmt(last)}</span></figcaption>"
            f"<svg class='spark' id='graph-{e(s['key'])}' viewBox='0 0 {W:.0f} {H:.0f}' "
            f"preserveAspectRatio='none' role='img' aria-label='{e(s['title'])}'>"
            f"<path class='base' d='M0 {H - 0.5:.1f}H{W:.0f}'/><path class='line' d='{d}'/></svg>"
            f"<small>peak <span class='peak'>{_fmt(peak)}</span> &middot; last {window_s / 60:.0f} min</small>"
            "</figure>")  # fmt: skip


def _json_for_script(data: Any) -> str:
    """JSON safe inside <script type=application/json>: no '<', '>' or '&' to end the element."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(daemon: str, summary: str, picture: str, series: dict[str, Any], title: str = "",
                status_json: bool = True) -> str:  # fmt: skip
    """The whole page. `summary` and `picture` are HTML the daemon built (names escaped);
    `series` is the recorder's `as_json()`; `status_json`: the daemon serves /status."""
    e = html.escape
    status_link = 'JSON: <a href="/status">/status</a> &middot; ' if status_json else ""
    graphs = "".join(_graph(s, series["window_s"]) for s in series["series"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<title>{e(title or f"tierproxy {daemon}")}</title><style>{_STYLE}</style></head><body>
<h1>tierproxy {e(daemon)}</h1>
<p class="summary" id="summary">{summary}</p>
<section class="graphs" id="graphs">{graphs}</section>
<section id="picture">{picture}</section>
<footer><span id="updated"></span> &middot; {status_link}<a href="/status/series">/status/series</a> &middot; Prometheus: <a href="/metrics">/metrics</a></footer>
<script type="application/json" id="series-data">{_json_for_script(series)}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def page_response(text: str) -> web.Response:
    resp = web.Response(text=text, content_type="text/html")
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def badge(state: str) -> str:
    """A state as a coloured badge (the class names only ever come from a fixed set of words)."""
    cls = "".join(c for c in state.lower() if c.isalnum())
    return f"<span class='badge s-{cls}'>{html.escape(state)}</span>"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], ident: str = "",
          row_classes: Iterable[str] | None = None) -> str:  # fmt: skip
    """A table of cells that are already HTML (the caller escapes what comes from names)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{html.escape(classes[i])}'" if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    ident_attr = f" id='{html.escape(ident)}'" if ident else ""
    return f"<table{ident_attr}><tr>{head}</tr>{''.join(body)}</table>"


def status_page(request: web.Request, daemon: str, summary: str, picture: str) -> web.Response:
    """The page for a request to an admin app made with `series` (proxy/core/admin.py)."""
    recorder = request.app.get(RECORDER)
    series = recorder.as_json() if recorder is not None else {"interval_s": 2.0, "window_s": 300.0, "series": []}
    return page_response(render_page(daemon, summary, picture, series))
