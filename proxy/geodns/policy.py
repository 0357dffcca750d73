"""Which data centers a client gets for a policy name: a pure function of config, region, client
network and which data centers are available.

* `geo`: the client's region has a rule (`regions.<region>`): its `weights` split the clients
  among the weighted DCs that are available (stable per client network), else the first available
  DC of its `datacenters` (the fallback order). A region without a rule uses the name's own
  `weights`/`datacenters`.
* `weighted`: the name's `weights`, split per client network over the available DCs.
* `failover`: the first available DC of `datacenters`.

Weighted splits use weighted rendezvous hashing (proxy.core.hashing) of the client network, so a
client network always gets the same DC, and when one DC goes away only its own clients move.
When no DC of the name is available, `fail_open` answers with all of them (a DNS answer that may
be wrong beats none); otherwise the decision is empty (the server answers SERVFAIL).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from proxy.core.hashing import rendezvous
from proxy.geodns.config import NameConfig

__all__ = ["Decision", "decide", "name_datacenters"]


@dataclass(frozen=True, slots=True)
class Decision:
    datacenters: tuple[str, ...]  # whose addresses go in the answer; empty: SERVFAIL
    reason: str
    per_client: bool  # the choice depends on the client network (a weighted split)


def name_datacenters(name: NameConfig) -> list[str]:
    """Every data center the name may answer with, in config order, no duplicates."""
    out: list[str] = []
    for dc in [*name.datacenters, *name.weights]:
        if dc not in out:
            out.append(dc)
    for rule in name.regions.values():
        for dc in [*rule.datacenters, *rule.weights]:
            if dc not in out:
                out.append(dc)
    return out


def _split(weights: Mapping[str, int], available: Collection[str], network: bytes,
           what: str) -> Decision | None:  # fmt: skip
    members = [(dc, w) for dc, w in weights.items() if w > 0 and dc in available]
    if not members:
        return None
    dc = rendezvous(network, members)
    total = sum(w for _, w in members)
    share = dict(members)[dc] * 100 / total
    return Decision((dc,), f"{what}: weighted split over {', '.join(d for d, _ in members)} "
                           f"-> {dc} ({share:.0f}% of client networks)", True)  # fmt: skip


def _first(order: list[str], available: Collection[str], what: str) -> Decision | None:
    for i, dc in enumerate(order):
        if dc in available:
            skipped = f" ({', '.join(order[:i])} unavailable)" if i else ""
            return Decision((dc,), f"{what}: first available of {order} -> {dc}{skipped}", False)
    return None


def decide(name: NameConfig, region: str | None, network: bytes, available: Collection[str],
           fail_open: bool = True) -> Decision:  # fmt: skip
    """The data centers for a client of `region` whose network is `network` (its bytes)."""
    decision: Decision | None = None
    if name.policy == "failover":
        decision = _first(name.datacenters, available, "failover")
    elif name.policy == "weighted":
        decision = _split(name.weights, available, network, "weighted")
        if decision is None and name.datacenters:
            decision = _first(name.datacenters, available, "weighted, none of the weighted up")
    else:
        rule = name.regions.get(region) if region is not None else None
        if rule is not None:
            what = f"geo: region {region}"
            weights, order = rule.weights, rule.datacenters
        else:
            what = f"geo: region {region} has no rule, name's default"
            weights, order = name.weights, name.datacenters
        if weights:
            decision = _split(weights, available, network, what)
        if decision is None:
            decision = _first(order, available, what)
        if decision is None and rule is not None:
            # The region's own list is exhausted: the name's default order comes next.
            decision = _first(name.datacenters, available, f"geo: region {region} exhausted, default")
    if decision is not None:
        return decision
    every = tuple(name_datacenters(name))
    if fail_open:
        return Decision(every, "no data center available: fail open, all of them", False)
    return Decision((), "no data center available and fail_open = false", False)
