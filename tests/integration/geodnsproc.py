"""Run `tierproxy geodns` as a real process for integration tests (like lbproc.LbProcess): config
in a temp dir, ports held by PortLocks (the DNS port free for UDP too), readiness probed with a
real DNS query, logs kept for failure reports; plus small dig/dnspython helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query

from proxy.devstack.ports import PortLock, allocate_port
from tests.integration.lbproc import http_json, wait_for

REPO = Path(__file__).resolve().parents[2]


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_dns_port() -> PortLock:
    held = []
    try:
        while True:
            lock = allocate_port()
            if _udp_free(lock.port):
                return lock
            held.append(lock)
    finally:
        for lock in held:
            lock.release()


class GeoDnsProcess:
    def __init__(self, tmp_path: Path, body: str, name: str = "geodns") -> None:
        self._port_lock = allocate_dns_port()
        self._admin_lock = allocate_port()
        self.port = self._port_lock.port
        self.admin_port = self._admin_lock.port
        self.config_path = tmp_path / f"{name}.toml"
        self.log_path = tmp_path / f"{name}.log"
        self.write_config(body)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, body: str) -> None:
        head = (f'listen = "127.0.0.1:{self.port}"\n'
                f'admin = {{ address = "127.0.0.1:{self.admin_port}" }}\n')  # fmt: skip
        self.config_path.write_text(head + body)

    def start(self) -> GeoDnsProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "geodns", "--config", str(self.config_path), "--json-logs"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        wait_for(self._ready, 20, "tierproxy geodns to answer DNS and admin")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"tierproxy geodns exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            self.query("x.invalid", "A", timeout=0.5)
            status, _ = http_json(self.admin("/healthz"), timeout=1)
        except (OSError, dns.exception.Timeout):
            return False
        return status == 200

    def query(self, name: str, qtype: str = "A", source: str = "127.0.0.1", tcp: bool = False,
              timeout: float = 2.0, **kw: object) -> dns.message.Message:  # fmt: skip
        q = dns.message.make_query(name, qtype, **kw)  # type: ignore[arg-type]
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, source=source, timeout=timeout)
        return dns.query.udp(q, "127.0.0.1", port=self.port, source=source, timeout=timeout)

    def dig(self, *args: str, source: str = "127.0.0.1") -> str:
        proc = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "-b", source, "+tries=1",
                               "+time=3", *args], capture_output=True, text=True, timeout=20)  # fmt: skip
        return proc.stdout

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


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in msg.answer if rrset.rdtype in (1, 28) for r in rrset)
