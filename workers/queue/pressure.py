"""Backpressure from a health signal (pure): should consumers pause, given a dbproxy's /status?

`pause_reason(doc, rule)` reads the JSON of a `tierproxy dbproxy` /status (`backends`: rows with
`role`, `name`, `usable`, `lag_seconds`, `last_error`) and returns why to pause, or None to run.
`doc` None means the status could not be fetched. Jobs that write through the dbproxy would only
fail and burn their attempts while its primary is down or its replicas lag far behind; pausing
leaves them queued instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PressureRule", "pause_reason"]


@dataclass(frozen=True, slots=True)
class PressureRule:
    max_replica_lag_seconds: float | None = 30.0  # None: replica lag never pauses
    pause_on_primary_down: bool = True
    pause_when_unreachable: bool = False


def pause_reason(doc: Any, rule: PressureRule) -> str | None:
    if doc is None:
        return "health status unreachable" if rule.pause_when_unreachable else None
    backends = doc.get("backends") if isinstance(doc, dict) else None
    if not isinstance(backends, list):
        return "health status has no backends list" if rule.pause_when_unreachable else None
    for row in backends:
        if not isinstance(row, dict):
            continue
        name = row.get("name", "?")
        if row.get("role") == "primary":
            if rule.pause_on_primary_down and row.get("usable") is not True:
                return f"primary {name} not usable ({row.get('last_error') or 'down'})"
        elif rule.max_replica_lag_seconds is not None:
            lag = row.get("lag_seconds")
            if isinstance(lag, (int, float)) and lag > rule.max_replica_lag_seconds:
                return f"replica {name} lags {lag:.1f}s > {rule.max_replica_lag_seconds:g}s"
    return None
