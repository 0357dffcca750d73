"""The shard router admin's HTML status page (GET /): the shards, where statements went, the hot
keys and skew, and the graphs (proxy/core/statuspage.py).

Pure: /status's body in, (summary, picture) HTML out; every name escaped.
"""

from __future__ import annotations

import html
from typing import Any

from proxy.core.series import Series
from proxy.core.statuspage import badge, table

__all__ = ["SERIES", "render_picture"]

SERIES = (
    Series("statements", "statements", "rate", ("tierproxy_shard_routed_statements_total",)),
    Series("errors", "errors sent", "rate", ("tierproxy_shard_errors_total",)),
    Series("scatters", "scatter statements", "rate", ("tierproxy_shard_scatters_total",)),
    Series("skew", "skew (busiest / mean)", "gauge", ("tierproxy_shard_skew_ratio",), unit="x", agg="max"),
)  # fmt: skip


def render_picture(st: dict[str, Any]) -> tuple[str, str]:
    e = html.escape
    shards = st["shards"]
    total = sum(s["rows_routed"] for s in shards) or 1
    skew = st.get("skew") or {}
    summary = (f"uptime {st['uptime']:.0f}s &middot; workers {len(st.get('workers', []))} &middot; "
               f"clients {st['clients']} &middot; {len(shards)} shards &middot; scatter {e(str(st.get('scatter')))}"
               f" &middot; busiest {e(str(skew.get('busiest') or '-'))} at {skew.get('max_to_mean', 0):.2f}x the mean")  # fmt: skip
    rows = []
    for s in shards:
        why = "" if s["state"] == "connected" else "no connection held now (opened on demand)"
        share = s["rows_routed"] / total
        bar = (f"<span style='display:inline-block;height:.8em;background:#2a6fb0;width:{share * 8:.2f}em'>"
               "</span>")  # fmt: skip
        rows.append([e(s["name"]), e(s["address"]), badge(s["state"]), f"<span class='why'>{e(why)}</span>",
                     str(s["rows_routed"]), f"{share:.1%} {bar}"])  # fmt: skip
    parts = ["<h2>shards</h2>",
             table(["shard", "address", "state", "why", "statements", "share"], rows, ident="shards")]
    groups = [[e(n), e(str(g["map"])), e(str(g["key"])), e(", ".join(g["tables"]))]
              for n, g in st.get("groups", {}).items()]  # fmt: skip
    parts += ["<h2>table groups</h2>", table(["group", "map", "key", "tables"], groups, ident="groups")]
    hot = [[e(h["group"]), f"<code>{e(str(h['key']))}</code>", e(str(h["shard"])), str(h["count"]),
            f"{h['share']:.1%}"] for h in st.get("hot_keys", [])[:10]]  # fmt: skip
    if hot:
        parts += ["<h2>hot keys</h2>", table(["group", "key", "shard", "statements", "share"], hot, ident="hot-keys")]
    return summary, "".join(parts)
