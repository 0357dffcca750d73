"""Run `tierproxy geodns` as a real process for integration tests (like lbproc.LbProcess): config
in a temp dir, ports held by PortLocks (the DNS port free for UDP too), readiness probed with a
real DNS query, logs kept for failure reports; plus small dig/dnspython helpers."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import dns.message
import dns.query

from proxy.devstack.ports import PortLock, allocate_port
from tests.integration.lbproc import DaemonProcess


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


class GeoDnsProcess(DaemonProcess):
    """Ready when it answers a DNS query and its admin API /healthz."""

    kind = "geodns"

    def __init__(self, tmp_path: Path, body: str, name: str = "geodns") -> None:
        super().__init__(tmp_path, name, allocate_dns_port())
        self.write_config(body)

    def write_config(self, body: str) -> None:
        head = (f'listen = "127.0.0.1:{self.port}"\n'
                f'admin = {{ address = "127.0.0.1:{self.admin_port}" }}\n')  # fmt: skip
        self.config_path.write_text(head + body)

    def _answers(self) -> bool:
        try:
            self.query("x.invalid", "A", timeout=0.5)
        except (OSError, dns.exception.Timeout):
            return False
        return super()._answers()

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


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in msg.answer if rrset.rdtype in (1, 28) for r in rrset)
