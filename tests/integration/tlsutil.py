"""Test certificates made with the openssl command line: a CA, leaf certificates for names (and
127.0.0.1), and helpers to talk TLS to a balancer with real clients (curl, openssl s_client,
Python's ssl)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ca", "Pair", "curl", "make_ca", "peer_cert_names", "tls_get"]


@dataclass
class Pair:
    cert: Path
    key: Path


@dataclass
class Ca:
    dir: Path
    cert: Path
    key: Path

    def issue(self, name: str, dns: list[str], *, client: bool = False, days: int = 2) -> Pair:
        """A leaf for `dns` (and IP 127.0.0.1), signed by this CA (EC P-256)."""
        key = self.dir / f"{name}.key"
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.crt"
        ext = self.dir / f"{name}.ext"
        sans = ",".join([f"DNS:{d}" for d in dns] + ["IP:127.0.0.1"])
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={dns[0] if dns else name}")  # fmt: skip
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-days", str(days), "-out", cert, "-extfile", ext)  # fmt: skip
        return Pair(cert, key)


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str = "ca") -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    cert = directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", cert, "-subj", f"/CN=tierproxy test {name}", "-days", "2")  # fmt: skip
    return Ca(directory, cert, key)


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args], capture_output=True,
                          text=True, timeout=timeout + 5)  # fmt: skip


def peer_cert_names(port: int, server_name: str | None, ca: Path) -> list[str]:
    """The DNS names of the certificate the server at 127.0.0.1:`port` shows for `server_name`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            cert = s.getpeercert()
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def tls_get(port: int, server_name: str, ca: Path, path: str = "/", *, host: str | None = None,
            session: ssl.SSLSession | None = None) -> tuple[bytes, ssl.SSLSocket | None, bool, ssl.SSLSession | None]:  # fmt: skip
    """One GET over a fresh TLS connection: (raw response, -, whether the session was reused,
    the session for a later resumption)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or server_name}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out, None, s.session_reused, s.session
