"""The cdn admin's HTML status page (GET / on the admin address), rendered from the /status JSON
in the shared frame (proxy/core/statuspage.py: live graphs, refreshed in place, no external
assets).

Pure: a dict in, HTML out. Every figure has an id (`hit-ratio`, `objects`, `bytes`, ...) so
scripts and tests can find it; every URL and name is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from proxy.core.series import Series
from proxy.core.statuspage import badge, render_page, table

__all__ = ["SERIES", "render_picture", "render_status_page"]

_COUNTERS = ("requests", "hits", "misses", "stale_served", "stale_while_revalidate", "revalidated", "coalesced",
             "origin_requests", "origin_errors", "not_stored", "passes", "evictions")

P = "tierproxy_cdn_"
SERIES = (
    Series("requests", "requests", "rate", (P + "requests_total",)),
    Series("errors", "origin errors", "rate", (P + "origin_errors_total",)),
    Series("hit_ratio", "hit ratio", "ratio", (P + "hits_total",), unit="", denominator=(P + "misses_total",)),
    Series("latency_p95", "origin latency p95", "quantile", (P + "origin_latency_seconds",), unit="ms",
           scale=1000.0),
)  # fmt: skip


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # not reached


def render_picture(st: dict[str, Any]) -> tuple[str, str]:
    """The summary line and the picture: hit ratio, store fill, origins (state and why), top URLs."""
    e = html.escape
    fill = st["bytes"] / st["max_bytes"] if st["max_bytes"] else 0.0
    counters = "".join(f"<tr><td>{e(k.replace('_', ' '))}</td><td id='c-{e(k)}'>{st.get(k, 0)}</td></tr>"
                       for k in _COUNTERS)
    top = "".join(f"<tr><td><code>{e(t['url'])}</code></td><td class=\"n\">{t['hits']}</td>"
                  f"<td class=\"n\">{_human(t['bytes'])}</td></tr>" for t in st.get("top_urls", []))
    top = top or "<tr><td colspan='3'>nothing stored yet</td></tr>"
    trace = st.get("trace")
    trace_line = (f"recording a key trace to <code>{e(trace['file'])}</code> ({trace['records']} records)"
                  if trace else "no key trace being recorded")
    origins = st.get("origins", [])
    rows = [[e(o["name"]), e(o["address"]), badge(o["state"]),
             f"<span class='why'>{e(str(o.get('reason') or ''))}</span>", str(o["requests"]), str(o["inflight"]),
             e(", ".join(f"{k} {v}" for k, v in sorted(o.get("failures", {}).items())) or "0")]
            for o in origins]  # fmt: skip
    summary = (f'hit ratio <b id="hit-ratio">{st["hit_ratio"]:.4f}</b> ({st["hits"]} hits, '
               f'{st["misses"]} misses) &middot; objects <b id="objects">{st["objects"]}</b> &middot; '
               f'eviction policy <b id="policy">{e(str(st["policy"]))}</b>')  # fmt: skip
    picture = f"""<h2>store</h2>
<p>size <b id="bytes">{st['bytes']}</b> of <b id="max-bytes">{st['max_bytes']}</b> bytes
({_human(st['bytes'])} of {_human(st['max_bytes'])}, {fill:.1%}) &middot; purges {st.get('purges', 0)}
&middot; reloads {st.get('reloads', 0)}</p>
<div style="width:20em;height:1em;background:#eee;border:1px solid #999"><div style="height:100%;background:#4a8;width:{min(fill, 1.0) * 100:.1f}%"></div></div>
<h2>origins</h2>{table(["origin", "address", "state", "why", "requests", "in flight", "failures"], rows,
                       ident="origins", row_classes=["s-down" if o["state"] == "down" else "" for o in origins])}
<h2>top URLs</h2><table id="top-urls"><tr><th>URL</th><th>hits</th><th>size</th></tr>{top}</table>
<h2>counters</h2><table id="counters">{counters}</table>
<p>{trace_line}.</p>"""
    return summary, picture


def render_status_page(st: dict[str, Any], series: dict[str, Any] | None = None) -> str:
    """The whole page (the admin serves it with proxy/core/statuspage.py's headers)."""
    series = series or {"interval_s": 2.0, "window_s": 300.0, "series": []}
    return render_page("cdn", *render_picture(st), series)
