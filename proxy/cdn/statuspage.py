"""The cdn admin's HTML status page (GET / on the admin address), rendered from the /status JSON.

Pure: a dict in, a string out. Self-contained (inline style, no scripts, no external assets), so
it works on an isolated admin network; it reloads itself every 5 seconds. Every figure has an id
(`hit-ratio`, `objects`, `bytes`, ...) so scripts and tests can find it.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["render_status_page"]

_COUNTERS = ("hits", "misses", "stale_served", "stale_while_revalidate", "revalidated", "coalesced",
             "origin_requests", "origin_errors", "not_stored", "passes", "evictions")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # not reached


def render_status_page(st: dict[str, Any]) -> str:
    e = html.escape
    fill = st["bytes"] / st["max_bytes"] if st["max_bytes"] else 0.0
    counters = "".join(f"<tr><td>{e(k.replace('_', ' '))}</td><td id='c-{e(k)}'>{st.get(k, 0)}</td></tr>"
                       for k in _COUNTERS)
    top = "".join(f"<tr><td><code>{e(t['url'])}</code></td><td class='n'>{t['hits']}</td>"
                  f"<td class='n'>{_human(t['bytes'])}</td></tr>" for t in st.get("top_urls", []))
    top = top or "<tr><td colspan='3'>nothing stored yet</td></tr>"
    trace = st.get("trace")
    trace_line = (f"recording a key trace to <code>{e(trace['file'])}</code> ({trace['records']} records)"
                  if trace else "no key trace being recorded")
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>tierproxy cdn</title><style>body{{font-family:sans-serif;margin:1.5em}}td,th{{padding:4px 8px;
border:1px solid #ccc;text-align:left}}table{{border-collapse:collapse;margin-bottom:1em}}.n{{text-align:right}}
.big{{font-size:2em;font-weight:bold}}.bar{{width:20em;height:1em;background:#eee;border:1px solid #999}}
.bar div{{height:100%;background:#4a8}}</style></head><body>
<h1>tierproxy cdn</h1>
<p>hit ratio <span class="big" id="hit-ratio">{st['hit_ratio']:.4f}</span>
({st['hits']} hits, {st['misses']} misses)</p>
<p>size <b id="bytes">{st['bytes']}</b> of <b id="max-bytes">{st['max_bytes']}</b> bytes
({_human(st['bytes'])} of {_human(st['max_bytes'])}, {fill:.1%})</p>
<div class="bar"><div style="width:{min(fill, 1.0) * 100:.1f}%"></div></div>
<p>objects <b id="objects">{st['objects']}</b> &middot; eviction policy <b id="policy">{e(st['policy'])}</b>
&middot; purges {st.get('purges', 0)} &middot; reloads {st.get('reloads', 0)}</p>
<h2>Top URLs</h2><table id="top-urls"><tr><th>URL</th><th>hits</th><th>size</th></tr>{top}</table>
<h2>Counters</h2><table id="counters">{counters}</table>
<p>{trace_line}. JSON: <a href="/status">/status</a> &middot; Prometheus: <a href="/metrics">/metrics</a></p>
</body></html>
"""
