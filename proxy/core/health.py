"""Health state of one upstream host, with HAProxy's rise/fall hysteresis.

Theory of operation
-------------------
Every daemon that probes upstreams (HTTP backends, Postgres primaries and replicas, DNS
targets) feeds check results into one `HealthState` per host. The state is a two-state machine,
UP and DOWN, with counters that damp flapping the way HAProxy's ``rise``/``fall`` do:

* an UP host goes DOWN after ``fall`` *consecutive* failed checks;
* a DOWN host goes UP after ``rise`` *consecutive* successful checks;
* any result of the opposite kind resets the streak, so ``ok, fail, ok, fail`` never flips.

`record` returns True exactly when the state flipped, so the caller logs and rebuilds its
eligible set only on edges, not on every probe. ``since`` is the time of the last flip (monotonic
seconds, passed in by the caller; this module never reads a clock).

``reason`` says why the host is not healthy: the reason given with the most recent failure,
kept while the host is DOWN (a success on the way back up does not erase it, because the host is
still DOWN) and while an UP host has a failure streak in progress; it is cleared to "" by any
success on an UP host and by the flip to UP.

A host that has never been checked (``unchecked=True``: a balancer's fresh start, a backend added
at runtime) is DOWN with the reason "not checked yet" until its first result, which decides the
state outright: there is no history to damp, and rise/fall apply from then on. A balancer runs
that first check before it serves (HAProxy instead starts servers UP, sending traffic to a dead
one until `fall` checks fail).

The class is pure state: no I/O, no timers, no locks (one event loop owns it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HealthState"]


class HealthState:
    """UP/DOWN state of one host with rise/fall hysteresis (see the module docstring)."""

    __slots__ = ("_rise", "_fall", "_up", "_reason", "_since", "_ok", "_fail", "_unchecked")

    def __init__(self, rise: int, fall: int, up: bool = True, *, since: float = 0.0,
                 unchecked: bool = False) -> None:  # fmt: skip
        # Same bounds as HAProxy: a threshold of 0 would make the state flip with no evidence.
        if rise < 1:
            raise ValueError(f"rise must be >= 1, got {rise}")
        if fall < 1:
            raise ValueError(f"fall must be >= 1, got {fall}")
        self._rise = rise
        self._fall = fall
        self._up = bool(up)
        self._reason = ""
        self._since = since
        self._ok = 0
        self._fail = 0
        self._unchecked = unchecked
        if unchecked:
            self._up = False
            self._reason = "not checked yet"

    def record(self, ok: bool, reason: str = "", now: float = 0.0) -> bool:
        """Feed one check result; return True if this result flipped UP<->DOWN."""
        if self._unchecked:
            # The first result decides (see the module docstring).
            self._unchecked = False
            self._ok, self._fail = (1, 0) if ok else (0, 1)
            self._reason = "" if ok else reason
            self._since = now
            flipped = ok != self._up
            self._up = ok
            return flipped
        if ok:
            self._ok += 1
            self._fail = 0
            if self._up:
                self._reason = ""
                return False
            if self._ok >= self._rise:
                self._up = True
                self._reason = ""
                self._since = now
                return True
            return False
        self._fail += 1
        self._ok = 0
        self._reason = reason
        if self._up and self._fail >= self._fall:
            self._up = False
            self._since = now
            return True
        return False

    @property
    def up(self) -> bool:
        return self._up

    @property
    def checked(self) -> bool:
        """False until the first result of a state created `unchecked`."""
        return not self._unchecked

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def since(self) -> float:
        return self._since

    @property
    def consecutive_ok(self) -> int:
        return self._ok

    @property
    def consecutive_fail(self) -> int:
        return self._fail

    @property
    def rise(self) -> int:
        return self._rise

    @property
    def fall(self) -> int:
        return self._fall

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot for the status page."""
        return {
            "up": self._up,
            "reason": self._reason,
            "since": self._since,
            "consecutive_ok": self._ok,
            "consecutive_fail": self._fail,
            "rise": self._rise,
            "fall": self._fall,
        }

    def __repr__(self) -> str:
        state = "UP" if self._up else "DOWN"
        return (
            f"HealthState({state}, ok={self._ok}/{self._rise}, fail={self._fail}/{self._fall}, "
            f"reason={self._reason!r})"
        )
