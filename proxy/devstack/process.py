"""ManagedProcess: one child process of the dev stack, with its log, readiness and signals.

The API is synchronous (`subprocess.Popen`) so sync fixtures, scripts and `tierproxy demo` can use
it, plus `*_async` twins of the calls that wait, for code already inside an event loop. A process:
- starts in its own session (process group), so SIGSTOP/SIGCONT/SIGTERM reach the whole group and a
  Ctrl-C aimed at the test runner's group does not race the fixture's own cleanup;
- writes stdout and stderr to one log file, `log_tail(n)` reads its end for error messages;
- is ready when a protocol probe succeeds (`wait_ready`), polled with backoff, never a fixed sleep;
  if the process exits first, or the deadline passes, the error carries the log tail;
- on Linux gets PR_SET_PDEATHSIG=SIGKILL when spawned from the main thread, so a test runner killed
  with SIGKILL does not leave servers behind (from another thread it is skipped: the signal fires
  when the spawning *thread* exits, which would kill the child early).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any, Self
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from proxy.devstack.poll import PollTimeout, wait_until, wait_until_async
from proxy.devstack.probes import AsyncProbe, SyncProbe

__all__ = ["Closing", "DevstackError", "ManagedProcess", "NotReady", "ProcessExited", "PortProcess", "python_child_env"]

LOG_TAIL_LINES = 40
# Bytes read from the end of a log for log_tail: enough for LOG_TAIL_LINES of long JSON lines.
_TAIL_BYTES = 64 * 1024
_PR_SET_PDEATHSIG = 1


# The checkout this file lives in; put first on a Python child's PYTHONPATH so the child runs the
# same source as the launcher even if another checkout is installed in the venv.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def python_child_env() -> dict[str, str]:
    """Environment for a Python child of the dev stack (a web worker, a tierproxy daemon)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH", "")) if p)
    # Unbuffered so a crash's last words are in the log file when we read its tail.
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DevstackError(Exception):
    """A dev-stack process failed to start or misbehaved; the message includes its log tail."""


class ProcessExited(DevstackError):
    def __init__(self, name: str, returncode: int, log_tail: str) -> None:
        super().__init__(f"{name} exited with code {returncode} before it was ready; log tail:\n{log_tail}")
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail


class NotReady(DevstackError):
    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{name} not ready: {reason}; log tail:\n{log_tail}")
        self.name = name
        self.log_tail = log_tail


def _pdeathsig_preexec() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Resolved in the parent: the preexec function runs between fork and exec and should do little.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class ManagedProcess:
    """Start `argv` now; stdout+stderr go to `<log_dir>/<name>.log` (appended, so restarts share it)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tierproxy-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._stopped = False
        # SIGTERM is sent once: aiohttp and redis treat a second one during shutdown as "hurry".
        self._term_sent = False
        with open(self.log_path, "ab") as log:
            # The child keeps its own copy of the descriptor; ours closes when the block ends.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec() if die_with_parent else None,
            )

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or stopped); reaps the child once it has exited."""
        return self._popen.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None

    @property
    def stopped(self) -> bool:
        """True between stop() and cont() (as far as this object has signalled it)."""
        return self._stopped and self.running

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - _TAIL_BYTES))
                data = log.read()
        except FileNotFoundError:
            return "<no log>"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:]) if lines else "<empty log>"

    # -- readiness --------------------------------------------------------------------------

    def _raise_if_exited(self) -> None:
        code = self.returncode
        if code is not None:
            raise ProcessExited(self.name, code, self.log_tail())

    def wait_ready(self, probe: SyncProbe, timeout: float = 10.0) -> None:
        """Poll `probe` until it returns True; raise ProcessExited / NotReady with the log tail."""
        try:
            wait_until(probe, timeout, f"{self.name} readiness", abort=self._raise_if_exited)
        except PollTimeout as exc:
            raise NotReady(self.name, str(exc), self.log_tail()) from exc

    async def wait_ready_async(self, probe: AsyncProbe, timeout: float = 10.0) -> None:
        try:
            await wait_until_async(probe, timeout, f"{self.name} readiness", abort=self._raise_if_exited)
        except PollTimeout as exc:
            raise NotReady(self.name, str(exc), self.log_tail()) from exc

    # -- signals ----------------------------------------------------------------------------

    def _signal_group(self, sig: int) -> bool:
        # Only while the leader is unreaped: after that its pid (= the group id) may be reused.
        if self._popen.poll() is not None:
            return False
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung backend)."""
        if self._signal_group(signal.SIGSTOP):
            self._stopped = True

    def cont(self) -> None:
        """SIGCONT: resume after stop()."""
        self._signal_group(signal.SIGCONT)
        self._stopped = False

    def kill(self) -> int | None:
        """SIGKILL (works on stopped processes too) and reap; returns the exit code."""
        self._signal_group(signal.SIGKILL)
        self._stopped = False
        return self._popen.wait()

    def send_terminate(self) -> None:
        """SIGTERM without waiting (plus SIGCONT, so a stopped process can act on it).

        Lets a caller shut several processes down in parallel before waiting on each.
        """
        if not self._term_sent:
            self._term_sent = self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)
        self._stopped = False

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (plus SIGCONT so a stopped process can act on it), SIGKILL after `timeout`."""
        if self._popen.poll() is not None:
            return self._popen.returncode
        self.send_terminate()
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    async def terminate_async(self, timeout: float = 5.0) -> int | None:
        """terminate() without blocking the event loop while the process shuts down."""
        if self._popen.poll() is not None:
            return self._popen.returncode
        self.send_terminate()
        try:
            await wait_until_async(
                _async_const(lambda: self._popen.poll() is not None), timeout, f"{self.name} exit"
            )
        except PollTimeout:
            return self.kill()
        return self._popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else ("running" if self.running else f"exited {self.returncode}")
        return f"ManagedProcess({self.name!r}, pid={self.pid}, {state})"


def _async_const(check: Callable[[], bool]) -> AsyncProbe:
    async def probe() -> bool:
        return check()

    return probe


class Closing:
    """`with server:` closes it on the way out, however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PortProcess(Closing):
    """Shared lifecycle of a dev-stack server that is one process on one locked port (Redis, a
    web worker, a dbproxy): its address, logs for the test harness, and shutdown that always
    releases the port."""

    process: ManagedProcess
    port_lock: Any  # a proxy.devstack.ports.PortLock
    host: str

    @property
    def port(self) -> int:
        return self.port_lock.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def managed_processes(self) -> list[ManagedProcess]:
        """For the test harness's log dump on failure."""
        return [self.process]

    def close(self, timeout: float = 5.0) -> None:
        """SIGTERM (SIGCONT first if stopped), SIGKILL after `timeout`; release the port. Idempotent."""
        try:
            self.process.terminate(timeout)
        finally:
            self.port_lock.release()

    async def close_async(self, timeout: float = 5.0) -> None:
        try:
            await self.process.terminate_async(timeout)
        finally:
            self.port_lock.release()
