"""Peak resident memory of a process during a test step, sampled from /proc in a thread.

`with RssSampler(pid) as rss: ...` reads /proc/<pid>/status VmRSS every `interval` seconds while
the block runs (and once before and after), so a spike that is over by the end of the block is
still seen: `rss.before`, `rss.peak` and `rss.growth` in KiB. VmHWM would be simpler but it is the
process's peak over its whole life, and session-wide fixtures have lived through other tests.
"""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["RssSampler", "rss_kib"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid = pid
        self.interval = interval
        self.before = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _sample(self) -> None:
        value = rss_kib(self.pid)
        self.samples += 1
        if value > self.peak:
            self.peak = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.before = self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def growth(self) -> int:
        """Peak minus the value at the start, KiB."""
        return self.peak - self.before
