"""A tierproxy daemon (`lb`, `geodns`, ...) as a child process of the dev stack, for the demo.

`start_daemon("geodns", toml, admin_port=..., log_dir=...)` writes the config, starts
`python -m proxy.cli geodns --config FILE` and returns once its admin port answers /healthz (every
daemon runs its first health checks before binding, so that is the moment it serves). The daemon's
code is never imported here: the dev stack only starts processes.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.devstack.ports import PortLock
from proxy.devstack.probes import http_probe
from proxy.devstack.process import ManagedProcess, PortProcess, python_child_env

__all__ = ["DaemonProcess", "PgDaemon", "start_daemon"]

READY_TIMEOUT = 30.0


class DaemonProcess:
    def __init__(self, kind: str, name: str, config: str, *, admin_port: int, log_dir: Path) -> None:
        self.kind = kind
        self.name = name
        self.admin_port = admin_port
        self.config_path = Path(log_dir) / f"{name}.toml"
        self.config_path.write_text(config)
        argv = [sys.executable, "-m", "proxy.cli", kind, "--config", str(self.config_path), "--json-logs"]
        self.process = ManagedProcess(argv, name=name, log_dir=log_dir, env=python_child_env())

    def close(self, timeout: float = 10.0) -> None:
        self.process.terminate(timeout)


def start_daemon(kind: str, config: str, *, admin_port: int, log_dir: Path, name: str | None = None,
                 admin_host: str = "127.0.0.1") -> DaemonProcess:  # fmt: skip
    proc = DaemonProcess(kind, name or kind, config, admin_port=admin_port, log_dir=log_dir)
    try:
        proc.process.wait_ready(http_probe(admin_host, admin_port), READY_TIMEOUT)
    except BaseException:
        proc.close()
        raise
    return proc


class PgDaemon(PortProcess):
    """A `dbproxy` or `shard` child serving PostgreSQL clients on `port_lock`, its admin API on
    `admin_lock`: `.port`, `.admin_port`, `.config_path`, `.dsn(...)`, `.status()`. Closing it
    releases both ports."""

    def __init__(self, kind: str, config: str, *, log_dir: Path, users: Mapping[str, str], port_lock: PortLock,
                 admin_lock: PortLock, name: str) -> None:  # fmt: skip
        self.host = port_lock.host
        self.port_lock = port_lock
        self.admin_lock = admin_lock
        self.users = dict(users)
        self.config_path = Path(log_dir) / f"{name}.toml"
        self.config_path.write_text(config)
        argv = [sys.executable, "-m", "proxy.cli", kind, "--config", str(self.config_path), "--json-logs"]
        self.process = ManagedProcess(argv, name=name, log_dir=log_dir, env=python_child_env())

    @property
    def admin_port(self) -> int:
        return self.admin_lock.port

    def dsn(self, user: str = "app", database: str = "postgres") -> str:
        return f"postgresql://{user}:{self.users[user]}@{self.host}:{self.port}/{database}"

    def admin_get(self, path: str, timeout: float = 2.0) -> bytes:
        with urllib.request.urlopen(f"http://{self.host}:{self.admin_port}{path}", timeout=timeout) as resp:
            return resp.read()

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        return json.loads(self.admin_get("/status", timeout))

    def close(self, timeout: float = 10.0) -> None:
        try:
            super().close(timeout)
        finally:
            self.admin_lock.release()
