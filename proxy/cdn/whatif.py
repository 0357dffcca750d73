"""`tierproxy cdn whatif --trace FILE --size 64MiB`: replay a recorded key trace
(proxy/cdn/trace.py) through the cdn's own store (proxy/cdn/store.py) under each eviction policy
and print the hit ratios side by side, so an operator picks a policy from data.

Each record is a lookup: present in the store, a hit (and a use for the policy); absent, a miss,
and the object is stored with the recorded size, as the daemon stores a miss. The byte hit ratio
weighs each lookup by its size (origin bytes saved). `--warmup N` leaves the first N lookups
out of the ratios (they fill the cache). Freshness is not replayed: only the eviction question.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from proxy.cdn.policies import POLICIES
from proxy.cdn.store import Entry, Store
from proxy.cdn.trace import TraceError, read_trace

__all__ = ["Result", "main", "parse_size", "replay", "table"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
DEFAULT_MAX_OBJECT = 8 * 1024 * 1024  # cache.max_object_bytes' default (also proxy/cli.py's)


def parse_size(text: str) -> int:
    """'64MiB' -> 67108864; also KiB/GiB, kB/MB/GB (powers of 1000), plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 500MB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class Result:
    policy: str
    requests: int
    hits: int
    bytes_requested: int
    bytes_hit: int
    evictions: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": round(self.hit_ratio, 6), "byte_hit_ratio": round(self.byte_hit_ratio, 6)}


def replay(records: Sequence[tuple[Any, int]] | Iterable[tuple[Any, int]], max_bytes: int, policy: str,
           max_object_bytes: int = DEFAULT_MAX_OBJECT, warmup: int = 0) -> Result:
    store = Store(max_bytes, policy, max_object_bytes)
    res = Result(policy, 0, 0, 0, 0, 0)
    for n, (key, size) in enumerate(records):
        hit = store.get(key) is not None
        if not hit:
            store.put(key, Entry(200, [], b"", 0.0, 0.0, 0.0), cost=size)
        if n >= warmup:
            res.requests += 1
            res.bytes_requested += size
            if hit:
                res.hits += 1
                res.bytes_hit += size
    res.evictions = store.evictions
    return res


def table(results: Sequence[Result], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(f"{'policy':<10} {'hit ratio':>10} {'byte hit ratio':>15} {'evictions':>10}")
    for r in results:
        lines.append(f"{r.policy:<10} {r.hit_ratio:>10.4f} {r.byte_hit_ratio:>15.4f} {r.evictions:>10}")
    best = max(results, key=lambda r: (r.hit_ratio, r.byte_hit_ratio))
    lines.append(f"best hit ratio: {best.policy}")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    try:
        size = parse_size(args.size)
        max_object = parse_size(args.max_object)
        records = read_trace(args.trace)
    except (ValueError, OSError) as exc:  # TraceError is a ValueError
        kind = "trace" if isinstance(exc, (TraceError, OSError)) else "argument"
        print(f"tierproxy cdn whatif: {kind}: {exc}", file=sys.stderr)
        return 2
    policies = [p.strip() for p in (args.policies or ",".join(POLICIES)).split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        print(f"tierproxy cdn whatif: unknown policy {unknown}; one of {', '.join(POLICIES)}", file=sys.stderr)
        return 2
    results = [replay(records, size, p, max_object, args.warmup) for p in policies]
    distinct: dict[Any, int] = {}
    for key, sz in records:
        distinct[key] = sz
    if args.json:
        print(json.dumps({"trace": args.trace, "size": size, "requests": len(records), "distinct": len(distinct),
                          "distinct_bytes": sum(distinct.values()), "results": [r.as_dict() for r in results]}))
        return 0
    header = (f"trace {args.trace}: {len(records)} requests, {len(distinct)} distinct objects "
              f"({sum(distinct.values())} bytes); cache {size} bytes; warmup {args.warmup}")
    print(table(results, header), end="")
    return 0
