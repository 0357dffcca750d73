"""`POST /switchover` on the dbproxy's admin API: what to ask Patroni, and what to answer (pure).

The operator asks the proxy, which knows the cluster, rather than a Patroni node:

    curl -s -X POST -H 'Content-Type: application/json' -d '{"candidate": "node2"}' \
        http://127.0.0.1:9187/switchover

`plan_switchover(topology, body, patroni_urls=...)` checks the request against the proxy's view and
returns a `Plan` (the JSON for Patroni's own `POST /switchover`: `leader`, `candidate` and, when
given, `scheduled_at`, plus the REST endpoints to try, the leader's first) or a `Refusal` (an HTTP
status and a message):

- 409 when the proxy does not follow Patroni (`[topology] source = "static"`): there is nobody to ask;
- 400 for a body that is not a JSON object, a missing or unknown `candidate` (not a member of the
  cluster the proxy sees), the current leader as candidate, a `scheduled_at` that is not a string
  (Patroni parses the ISO 8601 timestamp itself and refuses a bad one: 503 below), or other keys;
- 503 when no leader is known (nothing to switch over from) or no REST endpoint is known.

`patroni_answer(status, text)` turns Patroni's reply into ours: Patroni's 200 ("Successfully
switched over to ...") and 202 ("Switchover scheduled") pass through with its message; anything
else (412 "candidate name does not match with sync_standby", 503 "Switchover failed", 500...) is
refused by Patroni and becomes our 503 with Patroni's status and message. The HTTP call itself
is patroni_admin.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .topology import Topology

__all__ = ["Plan", "Refusal", "patroni_answer", "plan_switchover"]

ALLOWED_KEYS = frozenset({"candidate", "scheduled_at"})


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message}


@dataclass(frozen=True, slots=True)
class Plan:
    leader: str
    candidate: str
    scheduled_at: str | None
    endpoints: tuple[str, ...]  # Patroni REST base URLs, in the order to try

    def patroni_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"leader": self.leader, "candidate": self.candidate}
        if self.scheduled_at is not None:
            body["scheduled_at"] = self.scheduled_at
        return body


def plan_switchover(topology: Topology | None, body: Any, *, following: bool,
                    patroni_urls: Sequence[str] = ()) -> Plan | Refusal:  # fmt: skip
    """See the module docstring. `following`: the proxy's topology source is Patroni; `body`: the
    request's parsed JSON; `patroni_urls`: the configured REST endpoints (etcd mode: none, the
    members' own api_url are used)."""
    if not following:
        return Refusal(409, 'this dbproxy does not follow Patroni ([topology] source = "static"): no switchover to ask for')
    if not isinstance(body, Mapping):
        return Refusal(400, 'the body must be a JSON object such as {"candidate": "node2"}')
    extra = sorted(set(body) - ALLOWED_KEYS)
    if extra:
        return Refusal(400, f"unknown field(s) {', '.join(map(str, extra))}; allowed: candidate, scheduled_at")
    candidate = body.get("candidate")
    if not isinstance(candidate, str) or not candidate:
        return Refusal(400, '"candidate" (the name of the replica to promote) is required')
    scheduled_at = body.get("scheduled_at")
    if scheduled_at is not None and not isinstance(scheduled_at, str):
        return Refusal(400, '"scheduled_at" must be an ISO 8601 timestamp string')
    if topology is None:
        return Refusal(503, "no view of the Patroni cluster yet")
    if candidate not in topology.by_name:
        names = ", ".join(m.name for m in topology.members) or "none"
        return Refusal(400, f"unknown candidate {candidate!r:.80}: the cluster's members are {names}")
    leader = topology.leader_member
    if leader is None:
        return Refusal(503, "the cluster has no running leader to switch over from")
    if candidate == leader.name:
        return Refusal(400, f"{candidate} is already the leader")
    endpoints: list[str] = []
    # The leader's own API first: Patroni runs a switchover on the leader, other nodes forward it.
    for url in [leader.api_url, *(m.api_url for m in topology.members if m is not leader), *patroni_urls]:
        if url:
            base = _api_base(url)
            if base not in endpoints:
                endpoints.append(base)
    if not endpoints:
        return Refusal(503, "no Patroni REST endpoint known (the members report no api_url)")
    return Plan(leader.name, candidate, scheduled_at, tuple(endpoints))


def _api_base(url: str) -> str:
    """Patroni's member api_url is `http://host:8008/patroni`; the base is what precedes the path."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}{sep}{host}" if sep else url.rstrip("/")


def patroni_answer(plan: Plan, status: int, text: str) -> tuple[int, dict[str, Any]]:
    """Our (HTTP status, JSON body) for Patroni's answer `status`, `text` to `plan`."""
    message = text.strip()[:500]
    body: dict[str, Any] = {"leader": plan.leader, "candidate": plan.candidate, "patroni_status": status,
                            "patroni_message": message}  # fmt: skip
    if plan.scheduled_at is not None:
        body["scheduled_at"] = plan.scheduled_at
    if status in (200, 202):
        body["result"] = "scheduled" if status == 202 else "switched over"
        return status, body
    body["error"] = f"Patroni refused the switchover ({status}): {message}"
    return 503, body
