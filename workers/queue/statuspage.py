"""A queue worker's status page (GET / on its `metrics` address): each queue's jobs by state, this
worker's state and why, and live graphs (proxy/core/statuspage.py's frame, the series recorded
from the worker's own registry by proxy/core/series.py).

Pure: the queues' stats and the worker's state in, (summary, picture) HTML out; names escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from proxy.core.series import Series
from proxy.core.statuspage import badge, table

__all__ = ["SERIES", "render_picture"]

P = "tierproxy_queue_"
SERIES = (
    Series("done", "jobs done", "rate", (P + "done_total",)),
    Series("failures", "retries + dead-lettered", "rate", (P + "retries_total", P + "dead_total")),
    Series("latency_p95", "handler time p95 (this worker)", "quantile", (P + "handler_duration_seconds",),
           unit="ms", scale=1000.0),
    Series("depth", "jobs waiting", "gauge", (P + "depth",), unit=""),
)  # fmt: skip


def render_picture(consumer: str, paused: str | None, stats: Mapping[str, Any]) -> tuple[str, str]:
    e = html.escape
    state = "paused" if paused else "up"
    summary = (f"worker {e(consumer)} {badge(state)}"
               f"{f' <span class=why>{e(paused)}</span>' if paused else ''} &middot; queues {len(stats)}")  # fmt: skip
    rows, classes = [], []
    for q, s in stats.items():
        why = f"oldest job waiting {s.oldest_age:.0f} s" if s.oldest_age >= 60 else ""
        rows.append([e(q), badge("stale" if why else "up"), f"<span class='why'>{e(why)}</span>", str(s.depth),
                     str(s.delayed), str(s.in_flight), str(s.parked), f"{s.oldest_age:.1f} s", str(s.done),
                     str(s.retries), str(s.dead), str(s.dead_now)])  # fmt: skip
        classes.append("")
    picture = "<h2>queues</h2>" + table(
        ["queue", "state", "why", "waiting", "delayed", "in flight", "parked", "oldest", "done", "retries", "dead",
         "dead letters now"], rows, ident="queues", row_classes=classes)  # fmt: skip
    return summary, picture
