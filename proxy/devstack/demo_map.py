"""The map of ports `tierproxy demo` prints first: which tier listens where, its status page, and
what is behind it (pure: rows in, lines out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Tier", "port_map"]


@dataclass(frozen=True)
class Tier:
    protocol: str  # what a client speaks to it: DNS, HTTP, SQL, Redis
    name: str
    listen: str
    admin: str  # the status page's URL ("" when the tier has none)
    behind: str


DIAGRAM = """\
              dig --> geodns  (www.demo.test: east or west, by the client's region)
                        |
          +-------------+-------------------+
   curl --> east lb --> web workers       west lb --> west web workers
   curl --> cdn ------> web workers' /static/
            web workers --> redis (sessions; POST /notes enqueues a job --> queue worker)
            web workers, queue worker, psql --> dbproxy --> Patroni: primary + 2 replicas
   psql --> shard router --> 4 PostgreSQL shards (users by user_id % 4)"""


def port_map(tiers: Sequence[Tier]) -> list[str]:
    rows = [("", "tier", "listens on", "status page", "in front of")]
    rows += [(t.protocol, t.name, t.listen, t.admin or "-", t.behind) for t in tiers]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = ["map of the demo (every admin port's / is a status page with live graphs):", "", DIAGRAM, ""]
    for r in rows:
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return out
