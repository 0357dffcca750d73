"""Run `tierproxy lb` as a real process for integration tests: config in a temp dir, ports held by
PortLocks, readiness probed through the admin API, logs kept for failure reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from proxy.devstack.poll import PollTimeout, wait_until
from proxy.devstack.ports import PortLock, allocate_port

REPO = Path(__file__).resolve().parents[2]


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if method != "GET":
        # The admin API takes changes only as JSON (its CSRF guard), with a body or without.
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """`proxy.devstack.poll.wait_until`, except that an exception from `predicate` fails at once
    (tests assert inside their predicates) and a timeout is a TimeoutError."""
    failure: list[BaseException] = []

    def condition() -> Any:
        try:
            return predicate()
        except Exception as exc:
            failure.append(exc)
            return None

    def abort() -> None:
        if failure:
            raise failure[0]

    try:
        return wait_until(condition, timeout, what, abort)
    except PollTimeout:
        raise TimeoutError(f"timed out waiting for {what}") from None


class DaemonProcess:
    """A `tierproxy <kind>` subprocess on a listen port and an admin port (held by PortLocks while
    it runs), its config and log in `tmp_path`. Subclasses say when it answers (`_answers`)."""

    kind = ""

    def __init__(self, tmp_path: Path, name: str, port_lock: PortLock | None = None) -> None:
        self._port_lock = port_lock or allocate_port()
        self._admin_lock = allocate_port()
        self.port = self._port_lock.port
        self.admin_port = self._admin_lock.port
        self.dir = tmp_path
        self.config_path = tmp_path / f"{name}.toml"
        self.log_path = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        # The PortLocks are file locks, not sockets: we keep them while the daemon runs so that
        # no parallel test allocates the same ports.
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", self.kind, "--config", str(self.config_path), "--json-logs"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        wait_for(self._ready, 20, f"tierproxy {self.kind} to answer")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"tierproxy {self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self._answers()

    def _answers(self) -> bool:
        """The admin API answers /healthz (the daemon has made its first checks and bound)."""
        try:
            status, _ = http_json(self.admin("/healthz"), timeout=1)
        except OSError:
            return False
        return status == 200

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._port_lock.release()
        self._admin_lock.release()
        return self.proc.returncode


class LbProcess(DaemonProcess):
    """A `tierproxy lb` subprocess. `body` is the TOML after the listen/admin lines."""

    kind = "lb"

    def __init__(self, tmp_path: Path, body: str, name: str = "lb", admin_extra: str = "",
                 listen: bool = True) -> None:  # fmt: skip
        super().__init__(tmp_path, name)
        self.admin_extra = admin_extra  # more keys of the admin table, e.g. 'token_file = "..."'
        self.listen = listen  # False: the body has its own [[listeners]] (self.port stays unused)
        self.write_config(body)

    def write_config(self, body: str) -> None:
        # admin as an inline table, so the body may start with more top-level keys
        extra = f", {self.admin_extra}" if self.admin_extra else ""
        listen = f'listen = "127.0.0.1:{self.port}"\n' if self.listen else ""
        head = f'{listen}admin = {{ address = "127.0.0.1:{self.admin_port}"{extra} }}\n'
        self.config_path.write_text(head + body)

    @property
    def name(self) -> str:
        return self.config_path.stem

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self) -> dict[str, Any]:
        code, data = http_json(self.admin("/status"))
        assert code == 200, data
        return data

    def backend(self, pool: str, name: str) -> dict[str, Any] | None:
        for b in self.status()["pools"][pool]["backends"]:
            if b["name"] == name:
                return b
        return None
