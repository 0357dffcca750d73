"""`workers = N` for the cdn: each worker process has its own store, engine and origin checks; the
supervisor (admin port) merges their `/status` snapshots into one. Pure: plain dicts in, one out.

Counters, bytes, objects and the bound add up (N stores of `max_bytes` each hold up to N times
it); evictions add up per policy; top URLs are summed by URL and ranked again; the origin pool's
state is the first worker's view (each worker checks the origins itself), and `workers` keeps
each worker's own counts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["merge_status"]

_PER_WORKER = ("pid", "hits", "misses", "objects", "bytes", "max_bytes")


def merge_status(snaps: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for snap in snaps:
        for key, value in snap.items():
            if isinstance(value, bool) or key in ("hit_ratio", "policy", "origins", "trace", "top_urls", "pid"):
                continue
            if isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
            elif key == "evictions_by_policy":
                merged = out.setdefault(key, {})
                for policy, n in value.items():
                    merged[policy] = merged.get(policy, 0) + n
    urls: dict[str, dict[str, int]] = {}
    for snap in snaps:
        for item in snap.get("top_urls", ()):
            acc = urls.setdefault(item["url"], {"hits": 0, "bytes": item["bytes"]})
            acc["hits"] += item["hits"]
    out["top_urls"] = [{"url": u, **v} for u, v in sorted(urls.items(), key=lambda kv: -kv[1]["hits"])[:top]]
    lookups = out.get("hits", 0) + out.get("misses", 0)
    out["hit_ratio"] = round(out.get("hits", 0) / lookups, 4) if lookups else 0.0
    out["policy"] = snaps[0].get("policy") if snaps else None
    out["origins"] = snaps[0].get("origins", []) if snaps else []
    out["trace"] = None
    out["workers"] = [{k: s.get(k) for k in _PER_WORKER} for s in snaps]
    return out
