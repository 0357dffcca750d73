"""Passive outlier detection: eject hosts that keep failing real requests (Envoy semantics).

Theory of operation
-------------------
Active health checks (`proxy.core.health`) probe a host every few seconds; outlier detection
watches the traffic itself and reacts within a handful of requests. The proxy reports the
`Outcome` of every upstream attempt with `OutlierDetector.record`. The rules follow Envoy's
``consecutive_5xx`` detector (``source/common/upstream/outlier_detection_impl.cc``):

* **Counting.** Every non-SUCCESS outcome increments the host's consecutive-failure counter;
  a SUCCESS resets it to 0. Connect failures, timeouts and resets count like 5xx (Envoy's
  default, ``split_external_local_origin_errors: false``). Outcomes reported while a host is
  ejected are ignored: they belong to requests sent before the ejection, and counting them would
  put the host back in with a streak already started.
* **Ejection.** When the counter reaches ``consecutive_failures`` the counter resets and the
  host is ejected until ``now + min(base_ejection_s * multiplier, max_ejection_s)``, the
  multiplier having just been incremented -- the ``k``-th ejection in a row lasts ``k`` base
  periods, like Envoy's ``base_ejection_time * num_ejections``.
* **Ejection cap.** A host is not ejected if that would put the ejected share above
  ``max_ejection_percent`` of the members, i.e. when ``100 * (ejected + 1) > percent * members``
  (Envoy's check). The host stays in and its counter resets, so it needs a fresh streak.
  With few members this can mean "never": 1 member at 50% is never ejected, which is the point,
  an ejected last host helps no one (the balancer's panic mode covers the rest).
* **Return.** An ejection simply ends at its deadline: `is_ejected` compares with ``now``, so a
  host is back on time even if nobody calls `expire`. `expire` reports the hosts whose ejection
  has ended since the last call, for logging and for rebuilding the eligible set.
* **Decay** (Envoy's ``checkHostForUneject`` lowers the backoff once per interval of good
  behaviour). Our rule: the multiplier drops by one for each full ``base_ejection_s`` the host
  has spent un-ejected since its last ejection ended, never below 0. It is applied lazily, when
  the host is next ejected or its status is read, so no timer is needed; failures that do not
  lead to an ejection do not stop the decay (a real outlier gets ejected again, and then the
  decay stops by itself). The multiplier is capped at ``ceil(max_ejection_s / base_ejection_s)``
  (Envoy also stops growing it once the cap is reached), so a host ejected fifty times does not
  need fifty quiet periods to be forgiven. ``ejections`` (total count) is kept separately for
  the status page and never decays.

State is per name in plain dicts on the instance; there are no timers and no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from math import ceil
from typing import Any

__all__ = ["Outcome", "OutlierDetector"]


class Outcome(enum.Enum):
    """Result of one upstream attempt, as the proxy saw it."""

    SUCCESS = "success"
    CONNECT_FAILED = "connect_failed"  # Envoy: LocalOriginConnectFailed
    TIMEOUT = "timeout"  # Envoy: LocalOriginTimeout
    RESET = "reset"  # upstream closed or reset mid-request
    HTTP_5XX = "http_5xx"  # Envoy: ExtOriginRequestFailed


class _Host:
    """Per-host detector state."""

    __slots__ = ("consecutive", "last_failure", "ejections", "multiplier", "until", "healthy_since")

    def __init__(self) -> None:
        self.consecutive = 0
        self.last_failure: Outcome | None = None
        self.ejections = 0  # total, for the status page; never decays
        self.multiplier = 0  # backoff multiplier at `healthy_since`; decays with quiet time
        self.until: float | None = None  # end of the current/last uncollected ejection
        self.healthy_since = 0.0  # when the last ejection ended (for decay)


class OutlierDetector:
    """Consecutive-failure outlier detection over a named member set (see module docstring)."""

    def __init__(
        self,
        consecutive_failures: int = 5,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejection_percent: int = 50,
    ) -> None:
        # Defaults are Envoy's: consecutive_5xx 5, base_ejection_time 30s, max_ejection_time
        # 300s; Envoy's max_ejection_percent default is 10, ours is 50 because our pools are
        # small (with 4 backends, 10% would never eject anything).
        if consecutive_failures < 1:
            raise ValueError(f"consecutive_failures must be >= 1, got {consecutive_failures}")
        if not base_ejection_s > 0:
            raise ValueError(f"base_ejection_s must be > 0, got {base_ejection_s}")
        if not max_ejection_s >= base_ejection_s:
            raise ValueError(
                f"max_ejection_s ({max_ejection_s}) must be >= base_ejection_s ({base_ejection_s})"
            )
        if not 0 <= max_ejection_percent <= 100:
            raise ValueError(f"max_ejection_percent must be within 0..100, got {max_ejection_percent}")
        self.consecutive_failures = consecutive_failures
        self.base_ejection_s = float(base_ejection_s)
        self.max_ejection_s = float(max_ejection_s)
        self.max_ejection_percent = max_ejection_percent
        self._max_multiplier = ceil(self.max_ejection_s / self.base_ejection_s)
        self._hosts: dict[str, _Host] = {}
        # Names with an ejection not yet collected by expire(); small, so scans are cheap.
        self._ejected: set[str] = set()

    # -- membership -------------------------------------------------------------------------

    def set_members(self, names: Iterable[str]) -> None:
        """Replace the member set; names that stay keep their state, new ones start clean."""
        old = self._hosts
        new: dict[str, _Host] = {}
        for name in names:
            new[name] = old.get(name) or _Host()
        self._hosts = new
        self._ejected &= new.keys()

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._hosts)

    # -- hot path ---------------------------------------------------------------------------

    def record(self, name: str, outcome: Outcome, now: float) -> bool:
        """Account one attempt's outcome; return True iff this call ejected ``name``."""
        host = self._hosts.get(name)
        if host is None:
            return False  # not (or no longer) a member: a reply racing a reload
        if outcome is Outcome.SUCCESS:
            host.consecutive = 0
            return False
        if host.until is not None and now < host.until:
            return False  # ejected: stragglers from before the ejection do not count
        host.consecutive += 1
        host.last_failure = outcome
        if host.consecutive < self.consecutive_failures:
            return False
        host.consecutive = 0
        if not self._may_eject(name, now):
            return False
        self._eject(host, now)
        self._ejected.add(name)
        return True

    def is_ejected(self, name: str, now: float) -> bool:
        host = self._hosts.get(name)
        if host is None or host.until is None:
            return False
        return now < host.until

    # -- bookkeeping ------------------------------------------------------------------------

    def _active_ejections(self, now: float) -> int:
        hosts = self._hosts
        return sum(1 for n in self._ejected if now < hosts[n].until)  # type: ignore[operator]

    def _may_eject(self, name: str, now: float) -> bool:
        active = self._active_ejections(now)
        return 100 * (active + 1) <= self.max_ejection_percent * len(self._hosts)

    def _multiplier_at(self, host: _Host, now: float) -> int:
        """The backoff multiplier with decay applied up to ``now``."""
        until = host.until
        if until is not None and now < until:
            return host.multiplier  # no decay while ejected
        # An ejection that expire() has not collected yet ended at `until` all the same.
        quiet_since = host.healthy_since if until is None else until
        periods = int((now - quiet_since) // self.base_ejection_s)
        return max(0, host.multiplier - periods)

    def _eject(self, host: _Host, now: float) -> None:
        m = min(self._multiplier_at(host, now) + 1, self._max_multiplier)
        host.multiplier = m
        host.ejections += 1
        host.until = now + min(self.base_ejection_s * m, self.max_ejection_s)

    def expire(self, now: float) -> list[str]:
        """Collect hosts whose ejection has ended by ``now``; each is reported once."""
        if not self._ejected:
            return []
        hosts = self._hosts
        done = [n for n in self._ejected if not now < hosts[n].until]  # type: ignore[operator]
        for n in done:
            host = hosts[n]
            host.healthy_since = host.until  # type: ignore[assignment]
            host.until = None
            self._ejected.discard(n)
        done.sort()  # deterministic order for logs and tests
        return done

    def ejected_until(self, name: str) -> float | None:
        """End of ``name``'s ejection, None if not ejected (or already collected by expire)."""
        host = self._hosts.get(name)
        return None if host is None else host.until

    def status(self, name: str, now: float) -> dict[str, Any]:
        """JSON-ready state of one member for the status page; KeyError if not a member."""
        host = self._hosts[name]
        until = host.until
        ejected = until is not None and now < until
        return {
            "ejected": ejected,
            "ejected_until": until if ejected else None,
            "ejections": host.ejections,
            "multiplier": self._multiplier_at(host, now),
            "consecutive_failures": host.consecutive,
            "last_failure": host.last_failure.value if host.last_failure else None,
        }
