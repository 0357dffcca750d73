"""The router's vocabulary (router.py re-exports it): `PRIMARY`, `RouteReason`, `Route`,
`ReplicaView`, and the LSN arithmetic the replica views need (`MAX_LSN`, `lag_bytes`).

Kept apart from the session router (session_router.py) because that module is compiled: these
are plain Python classes (an Enum, a NamedTuple, a frozen dataclass) that stay interpreted."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["MAX_LSN", "PRIMARY", "ReadYourWrites", "ReplicaView", "Route", "RouteReason", "lag_bytes"]

PRIMARY = "primary"  # Route.target for the primary; config refuses a replica of that name

MAX_LSN = (1 << 64) - 1

ReadYourWrites = Literal["lsn", "primary-window", "global", "off"]


class RouteReason(enum.Enum):
    """Why a statement went where it did: a fixed vocabulary, safe as a metrics label."""

    READ = "read"
    WRITE = "write"
    TRANSACTION = "transaction"
    HINT = "hint"
    FALLBACK = "fallback"
    PINNED = "pinned"
    READ_YOUR_WRITES = "read_your_writes"

    # Members are singletons compared by identity: hash them the same way, in C, instead of
    # Enum's hash of the name in Python (routes are counted per statement, keyed by reason).
    __hash__ = object.__hash__


class Route(NamedTuple):
    """Where one statement runs. A named tuple: one is made per statement, and a frozen
    dataclass costs several times as much to build."""

    target: str  # PRIMARY or a replica's name
    reason: RouteReason

    @property
    def to_primary(self) -> bool:
        return self.target == PRIMARY


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the router sees it at one instant. None means unknown (not measured yet)."""

    name: str
    weight: int = 1
    up: bool = True
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: int | None = None
    outstanding: int = 0  # queries in flight on this replica


def lag_bytes(primary_lsn: int, replay_lsn: int) -> int:
    """WAL bytes the replica has yet to replay. Never negative: the primary's LSN is sampled
    at another instant than the replica's, so a replica can look ahead of a stale sample."""
    return max(0, primary_lsn - replay_lsn)
