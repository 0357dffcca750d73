"""A small bounded load generator for integration tests: threads with keep-alive connections.

It runs while the test does something disruptive (kills a backend, drains, reloads) and records
every outcome, so a test can assert that no client saw a failure. Bounded in count and time.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from proxy.devstack.poll import PollTimeout, wait_until


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0  # seconds, the longest any request (answered or failed) took

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failures(self) -> list[str]:
        bad = [f"status {s} x{n}" for s, n in self.statuses.items() if s != 200]
        return bad + self.errors


class Load:
    """`threads` clients each sending GET `path` back to back until `stop()` or `max_requests`."""

    def __init__(self, port: int, path: str = "/whoami", threads: int = 8,
                 max_requests: int = 20000, max_seconds: float = 60.0, method: str = "GET") -> None:
        self.port = port
        self.path = path
        self.method = method
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget = max_requests
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self) -> int:
        with self._lock:
            return self.result.total

    def wait_count(self, n: int, timeout: float = 30.0) -> None:
        def dead() -> None:
            if not any(t.is_alive() for t in self._threads):
                raise TimeoutError(f"load threads ended at {self.count()} of {n} requests")

        try:
            wait_until(lambda: self.count() >= n, timeout, "load", abort=dead)
        except PollTimeout:
            raise TimeoutError(f"load reached {self.count()} of {n} requests") from None

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.result

    def _take(self) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < self._deadline and self._take():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            started = time.monotonic()
            try:
                conn.request(self.method, self.path)
                resp = conn.getresponse()
                resp.read()
                who = resp.getheader("X-Served-By") or ""
                with self._lock:
                    self.result.statuses[resp.status] += 1
                    self.result.served_by[who] += 1
                    self.result.slowest = max(self.result.slowest, time.monotonic() - started)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.result.errors.append(f"{type(exc).__name__}: {exc}")
                    self.result.slowest = max(self.result.slowest, time.monotonic() - started)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
