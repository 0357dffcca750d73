"""Race-free loopback port allocation, after pgbouncer's test `PortLock`.

Binding to port 0, closing and handing the number to a server (asyncpg's `find_available_port`)
races with every other process doing the same. Instead each allocation takes an exclusive,
non-blocking `flock` on `/tmp/tierproxy-ports/<port>.lock` and keeps it until `release()`, so two
allocators that both use this module (parallel pytest workers, a demo next to a test run) never hand
out the same port. A bind check on the loopback address then skips ports that something outside
this scheme already uses. `flock` locks belong to the open file, not the process, so two PortLocks in
one process also exclude each other, and the kernel drops the lock when the holder dies.

The bind check binds the way servers do (SO_REUSEADDR): a port whose last connections linger in
TIME_WAIT (a demo stopped a moment ago) is free to them, so only a real listener (or a socket
bound without SO_REUSEADDR) makes a fixed port unavailable, and the message says which process
holds it (proxy/devstack/listeners.py). `allocate_port`, which may pick any port, is stricter: it
skips ports with anything on them, TIME_WAIT included, for test servers that bind without
SO_REUSEADDR.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
from pathlib import Path
from types import TracebackType
from typing import IO

from proxy.devstack.listeners import describe_listeners

__all__ = ["LOCK_DIR", "PORT_RANGE", "PortLock", "PortUnavailable", "allocate_port"]

LOCK_DIR = Path("/tmp/tierproxy-ports")
MAX_ATTEMPTS = 200


def _outside_ephemeral(low: int = 20000, high: int = 60000) -> tuple[int, int]:
    """[low, high] cut to the part below the kernel's ephemeral range (or above it). A port in
    that range can be taken as the source port of any outgoing connection between our bind
    check and the server's bind (seen: EADDRINUSE starting a proxy while clients connect)."""
    try:
        first, last = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        first, last = 32768, 60999  # Linux's default
    if first - low >= 2000:
        return low, min(high, first - 1)
    return max(low, last + 1), 65000


# Above the registered services most machines run, outside the ephemeral range.
PORT_RANGE = _outside_ephemeral()


class PortUnavailable(Exception):
    """The port is locked by another allocation or is already bound on the loopback address."""


def _bindable(host: str, port: int, strict: bool = False) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if not strict:
            # As a server binds: connections left in TIME_WAIT do not stop it, a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ensure_shared_dir(lock_dir: Path) -> None:
    if lock_dir.is_dir():
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    # Sticky and world-writable like /tmp, so test runs as different users share one scheme.
    try:
        lock_dir.chmod(0o1777)
    except PermissionError:
        pass  # someone else created it between mkdir and chmod; their mode stands


class PortLock:
    """An exclusive claim on one TCP port of `host`, held until `release()` (or context exit)."""

    def __init__(self, port: int, host: str = "127.0.0.1", lock_dir: Path = LOCK_DIR, *,
                 strict: bool = False) -> None:  # fmt: skip
        self.port = port
        self.host = host
        self.path = lock_dir / f"{port}.lock"
        _ensure_shared_dir(lock_dir)
        # The lock files stay on disk: unlinking one while another process has it open would let a
        # third process lock a fresh inode of the same name and both would think they own the port.
        try:
            file: IO[str] | None = open(self.path, "a")  # noqa: SIM115 - held for the lock's lifetime
        except PermissionError:
            # Another user's lock file: we cannot join that user's scheme for this port, so skip it.
            raise PortUnavailable(f"port {port}: lock file {self.path} belongs to another user") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            file.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise PortUnavailable(f"port {port}: locked by another allocation") from None
            raise
        if not _bindable(host, port, strict):
            file.close()  # closing the file drops the lock
            if strict:  # allocation tries another port: no need to say who holds this one
                raise PortUnavailable(f"port {port}: in use on {host}")
            raise PortUnavailable(f"port {port}: already bound on {host}: {describe_listeners(port)}")
        self._file = file
        # Who holds it, for a human looking at /tmp/tierproxy-ports; informational only.
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Drop the claim. Idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PortLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortLock({self.host}:{self.port}, held={self.held})"


def allocate_port(
    host: str = "127.0.0.1",
    *,
    port_range: tuple[int, int] = PORT_RANGE,
    lock_dir: Path = LOCK_DIR,
    rng: random.Random | None = None,
) -> PortLock:
    """A locked, currently bindable port in `port_range` (inclusive), chosen at random."""
    rng = rng or random.Random()
    low, high = port_range
    for _ in range(MAX_ATTEMPTS):
        try:
            return PortLock(rng.randint(low, high), host, lock_dir, strict=True)
        except PortUnavailable:
            continue
    raise PortUnavailable(f"no free port on {host} in {low}-{high} after {MAX_ATTEMPTS} attempts")
