"""A blocking HTTP/2 test client on the `h2` library over a real TLS socket (ALPN h2), plus raw
frame writing (hyperframe) for the abuse cases the h2 client itself would refuse to send."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset

__all__ = ["H2Client"]


class H2Client:
    def __init__(self, port: int, ca: Path, server_name: str = "site.test", *, validate: bool = True,
                 settings: dict[Any, int] | None = None, raw: socket.socket | None = None) -> None:  # fmt: skip
        """`raw`: a connected socket to start TLS on (after a PROXY header, say)."""
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        raw = raw or socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                               validate_outbound_headers=validate,
                                               normalize_outbound_headers=validate))  # fmt: skip
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.events: list[Any] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> bool:
        """Bytes on the wire as they are; False once the server has closed."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def read(self, timeout: float = 10.0, *, ack_data: bool = True) -> list[Any]:
        """Read once (up to `timeout`), feed h2, return the new events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return []
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.h2.receive_data(data)
        for ev in events:
            if ack_data and isinstance(ev, DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.flush()
        self.events += events
        return events

    def until(self, predicate: Any, timeout: float = 20.0, **kw: Any) -> None:
        deadline = time.monotonic() + timeout
        while not predicate() and not self.closed:
            if time.monotonic() > deadline:
                raise TimeoutError("no such event in time")
            self.read(min(1.0, deadline - time.monotonic()), **kw)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: list[tuple[bytes, bytes]] | None = None) -> int:  # fmt: skip
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", b"site.test"),
                (b":path", path.encode())] + (headers or [])  # fmt: skip
        self.h2.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:  # within the first window (tests keep bodies under 64 KiB)
            for i in range(0, len(body), 16384):
                self.h2.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
        self.flush()
        return sid

    def response(self, sid: int, timeout: float = 20.0) -> tuple[int, dict[bytes, bytes], bytes]:
        self.until(lambda: any(isinstance(e, (StreamEnded, StreamReset)) and e.stream_id == sid for e in self.events),
                   timeout)  # fmt: skip
        status, headers, body = 0, {}, b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, ResponseReceived):
                headers = dict(e.headers)
                status = int(headers[b":status"])
            elif isinstance(e, DataReceived):
                body += e.data
            elif isinstance(e, StreamReset):
                status = -int(e.error_code)
        return status, headers, body

    def goaway(self) -> ConnectionTerminated | None:
        for e in self.events:
            if isinstance(e, ConnectionTerminated):
                return e
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
