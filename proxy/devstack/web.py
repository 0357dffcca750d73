"""Launcher for `workers.web` backends: one process per worker on a locked loopback port.

`start_web_worker(name, sessions=..., static=...)` spawns `sys.executable -m workers.web` and waits
until `GET /healthz` answers 200. `WebWorkers` owns a set of them and closes them all (resuming any
that were SIGSTOPped first), which is what fixtures and `tierproxy demo` want. `WebWorker.restart()`
replaces the process on the *same* port (the lock is kept), so a load balancer configured with the
address sees the backend come back.

This module launches the worker by module name and does not import it, nor any daemon package.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.probes import http_probe, http_probe_async
from proxy.devstack.process import Closing, ManagedProcess, PortProcess, python_child_env

__all__ = ["WebWorker", "WebWorkers", "spawn_web_worker", "start_web_worker", "start_web_worker_async"]

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
WORKER_MODULE = "workers.web"
class WebWorker(PortProcess):
    """A running `workers.web` process: `.name`, `.port`, `.address`, `.url`, `.process`."""

    def __init__(
        self,
        name: str,
        port_lock: PortLock,
        argv: list[str],
        log_dir: Path,
        sessions: str,
        static: Path | None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port_lock = port_lock
        self.argv = argv
        self.log_dir = log_dir
        self.sessions = sessions
        self.static = static
        self.process = self._spawn()

    def _spawn(self) -> ManagedProcess:
        return ManagedProcess(self.argv, name=self.name, log_dir=self.log_dir, env=python_child_env())

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> WebWorker:
        self.process.wait_ready(http_probe(self.host, self.port, "/healthz"), timeout)
        return self

    async def wait_ready_async(self, timeout: float = READY_TIMEOUT) -> WebWorker:
        await self.process.wait_ready_async(http_probe_async(self.host, self.port, "/healthz"), timeout)
        return self

    def restart(self, *, kill: bool = True, timeout: float = READY_TIMEOUT) -> WebWorker:
        """Replace the process on the same port: SIGKILL (or graceful SIGTERM), start, wait ready.

        The default is SIGKILL because the usual question is "what survives a crash?"; in-memory
        sessions do not.
        """
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process = self._spawn()
        return self.wait_ready(timeout)

    async def restart_async(self, *, kill: bool = True, timeout: float = READY_TIMEOUT) -> WebWorker:
        if kill:
            self.process.kill()
        else:
            await self.process.terminate_async()
        self.process = self._spawn()
        return await self.wait_ready_async(timeout)

    def __repr__(self) -> str:
        return f"WebWorker({self.name!r}, {self.address}, {self.process!r})"


def spawn_web_worker(
    name: str,
    *,
    sessions: str = "memory",
    static: Path | None = None,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> WebWorker:
    """Start a worker process on a fresh locked port; not necessarily ready yet."""
    port_lock = allocate_port(HOST)
    try:
        log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tierproxy-web-"))
        argv = [
            sys.executable, "-m", WORKER_MODULE,
            "--host", HOST,
            "--port", str(port_lock.port),
            "--name", name,
            "--sessions", sessions,
            *(["--static", str(static)] if static is not None else []),
            *extra_args,
        ]
        return WebWorker(name, port_lock, argv, log_dir, sessions, static)
    except BaseException:
        port_lock.release()
        raise


def start_web_worker(
    name: str,
    *,
    sessions: str = "memory",
    static: Path | None = None,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> WebWorker:
    """Spawn a worker and wait until /healthz answers 200; cleaned up if it never does."""
    worker = spawn_web_worker(name, sessions=sessions, static=static, log_dir=log_dir, extra_args=extra_args)
    try:
        return worker.wait_ready(timeout)
    except BaseException:
        worker.close()
        raise


async def start_web_worker_async(
    name: str,
    *,
    sessions: str = "memory",
    static: Path | None = None,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> WebWorker:
    worker = spawn_web_worker(name, sessions=sessions, static=static, log_dir=log_dir, extra_args=extra_args)
    try:
        return await worker.wait_ready_async(timeout)
    except BaseException:
        await worker.close_async()
        raise


class WebWorkers(Closing):
    """Owns the workers it starts; `close()` terminates every one of them, stopped or not.

    Calling the object is `start()`, so a fixture can hand it out as the factory itself.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tierproxy-web-"))
        self.workers: list[WebWorker] = []

    def start(
        self,
        name: str,
        *,
        sessions: str = "memory",
        static: Path | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = READY_TIMEOUT,
    ) -> WebWorker:
        worker = spawn_web_worker(
            name, sessions=sessions, static=static, log_dir=self.log_dir, extra_args=extra_args
        )
        # Owned before waiting, so a worker that fails readiness is still closed by close().
        self.workers.append(worker)
        return worker.wait_ready(timeout)

    __call__ = start

    async def start_async(
        self,
        name: str,
        *,
        sessions: str = "memory",
        static: Path | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = READY_TIMEOUT,
    ) -> WebWorker:
        worker = spawn_web_worker(
            name, sessions=sessions, static=static, log_dir=self.log_dir, extra_args=extra_args
        )
        self.workers.append(worker)
        return await worker.wait_ready_async(timeout)

    def __iter__(self) -> Iterator[WebWorker]:
        return iter(self.workers)

    def __len__(self) -> int:
        return len(self.workers)

    def managed_processes(self) -> list[ManagedProcess]:
        return [w.process for w in self.workers]

    def close(self, timeout: float = 5.0) -> None:
        """Terminate all workers. SIGTERM goes to every one first, so they shut down in parallel."""
        for worker in self.workers:
            worker.process.send_terminate()
        errors: list[BaseException] = []
        for worker in self.workers:
            try:
                worker.close(timeout)
            except BaseException as exc:  # keep closing the rest; re-raise the first at the end
                errors.append(exc)
        self.workers.clear()
        if errors:
            raise errors[0]

    async def close_async(self, timeout: float = 5.0) -> None:
        for worker in self.workers:
            worker.process.send_terminate()
        errors: list[BaseException] = []
        for worker in self.workers:
            try:
                await worker.close_async(timeout)
            except BaseException as exc:
                errors.append(exc)
        self.workers.clear()
        if errors:
            raise errors[0]
