"""Failed-login throttling (like PostgreSQL's auth_delay), as a pure per-address limiter.

Two defences against password guessing, configured in `[auth]`:

* `failed_login_delay_ms`: a wrong password is answered (FATAL 28P01) only after this delay. The
  session waits on a timer, not the event loop, so other clients are not slowed.
* `max_failed_logins_per_minute`: once a client address has failed that many times within the
  last 60 seconds, its new login attempts are refused at once (FATAL 53300, before any password
  is checked and without the delay) until older failures age out of the window. Without it a
  client could open a hundred connections at a time and pay the delay once per hundred guesses.

`LoginLimiter` is the bookkeeping only (addresses and failure times); the session asks it
`blocked(addr, now)` before authenticating and tells it `failed(addr, now)` after a wrong
password. Memory is bounded: at most `max_addresses` addresses are remembered (the one whose
newest failure is oldest is forgotten first), each with at most `limit` timestamps.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LoginLimiter", "WINDOW_SECONDS"]

WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 100_000


class LoginLimiter:
    """Failed logins per client address over a sliding window of `window` seconds."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS, max_addresses: int = MAX_ADDRESSES) -> None:
        self.limit = limit  # 0: no limit
        self.window = window
        self.max_addresses = max_addresses
        self._fails: dict[str, deque[float]] = {}  # insertion order = order of the newest failure

    def __len__(self) -> int:
        return len(self._fails)

    def _recent(self, addr: str, now: float) -> deque[float] | None:
        q = self._fails.get(addr)
        if q is None:
            return None
        while q and now - q[0] >= self.window:
            q.popleft()
        if not q:
            del self._fails[addr]
            return None
        return q

    def count(self, addr: str, now: float) -> int:
        """Failures of `addr` within the window ending at `now`."""
        q = self._recent(addr, now)
        return len(q) if q is not None else 0

    def blocked(self, addr: str, now: float) -> bool:
        """True when `addr` has used up its failures: refuse its login without trying it."""
        return self.limit > 0 and self.count(addr, now) >= self.limit

    def failed(self, addr: str, now: float) -> None:
        """Record a failed login of `addr` at `now`."""
        if self.limit <= 0:
            return
        q = self._recent(addr, now)
        if q is None:
            q = deque(maxlen=self.limit)
        else:
            del self._fails[addr]  # re-inserted last: the most recently failing address
        q.append(now)
        self._fails[addr] = q
        while len(self._fails) > self.max_addresses:
            del self._fails[next(iter(self._fails))]
