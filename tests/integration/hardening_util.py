"""Shared helpers of the adversarial balancer tests: raw wire exchanges, a stdlib response
parser over captured bytes, a keep-alive client, and process probes."""

from __future__ import annotations

import http.client
import io
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.integration.lbproc import LbProcess, http_json

REJECT_STATUSES = {400, 413, 414, 431, 501, 505}
NO_HEALTH_NO_OUTLIER = (
    '[pools.web.health]\ntype = "none"\n[pools.web.outlier]\nenabled = false\n'
)



# -- wire helpers -------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes | list[bytes], timeout: float = 10.0) -> bytes:
    """Send bytes (or pieces, one send each), half-close, and read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        for piece in [data] if isinstance(data, bytes) else data:
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the balancer already answered and closed: read what it said
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


class _KeepOpen(io.BytesIO):
    def close(self) -> None:  # HTTPResponse closes its file after each body; keep reading
        pass


class _FakeSock:
    def __init__(self, f: io.IOBase) -> None:
        self._f = f

    def makefile(self, mode: str) -> io.IOBase:
        return self._f


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lowercased names (last one wins)
    raw_headers: list[tuple[str, str]]
    body: bytes


def _read_one(f: io.IOBase, method: str) -> Resp:
    resp = http.client.HTTPResponse(_FakeSock(f), method=method)  # type: ignore[arg-type]
    resp.begin()
    body = resp.read()
    items = resp.getheaders()
    return Resp(resp.status, {k.lower(): v for k, v in items}, items, body)


def parse_stream(raw: bytes, methods: list[str] | None = None) -> list[Resp]:
    """Every response in `raw`, parsed with http.client; the bytes must be exactly a sequence of
    complete responses (AssertionError otherwise)."""
    f = _KeepOpen(raw)
    out: list[Resp] = []
    i = 0
    while f.tell() < len(raw):
        method = methods[i] if methods and i < len(methods) else "GET"
        try:
            out.append(_read_one(f, method))
        except (http.client.HTTPException, ValueError) as exc:
            raise AssertionError(f"malformed response #{i} ({exc!r}) in {raw[:600]!r}") from None
        i += 1
    return out


class Client:
    """One keep-alive client connection; responses are read through one persistent buffered file,
    so bytes that follow a response are never silently dropped between reads."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        reader = io.BufferedReader(self.sock.makefile("rb", buffering=0))  # type: ignore[arg-type]
        # HTTPResponse closes its file when a body ends; this one must outlive each response.
        reader.close = lambda: None  # type: ignore[method-assign]
        self._file = reader
        self._fake = _FakeSock(reader)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: str = "GET") -> Resp:
        return _read_one(self._file, method)

    def get(self, path: str, method: str = "GET", version: str = "1.1", extra: bytes = b"") -> Resp:
        self.send(f"{method} {path} HTTP/{version}\r\nHost: t\r\n".encode() + extra + b"\r\n")
        return self.response(method)

    def at_eof(self, timeout: float = 10.0) -> bool:
        """True when the server closed the connection (nothing more to read)."""
        self.sock.settimeout(timeout)
        try:
            return self._file.read(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._file.raw.close()  # the socket's fd is only released once its makefile() is closed
        self.sock.close()


new_client = Client


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def lb_status(lb: LbProcess) -> dict:
    code, data = http_json(lb.admin("/status"))
    assert code == 200, data
    return data


