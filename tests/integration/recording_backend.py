"""A recording HTTP/1.1 backend for smuggling tests: it keeps the exact bytes of every request.

`RecordingBackend` is a small threaded socket server on loopback. It parses what it receives with
its own strict, independent parser (no httptools, no aiohttp), so a test can compare what the
client meant with what reached the backend, message by message:

* every complete request is recorded as a `Recorded` (method, target, headers, decoded body and
  the exact raw bytes of the message) and answered with a small 200 whose body is ``req=<index>``
  (header ``X-Req-Index``), so a client can tell which backend request each response answers;
* a message that breaks the grammar is recorded in `errors` (the balancer must never send one),
  answered 400 and the connection closed;
* bytes left at EOF or reset (a message the balancer cut short) are recorded in `incomplete`.

Strictness: CRLF line ends only; request-line ``token SP target SP HTTP/1.x``; field names are
tokens, no whitespace before the colon, no obs-fold, no CTLs in values; exactly one Host; framing
is either one ``Transfer-Encoding: chunked`` (and no Content-Length) or one all-digit
Content-Length. Chunk-size lines must be bare hex (the balancer re-chunks: extensions dropped),
and trailers must be empty (the balancer drops them).

A target containing ``hold_answer`` is answered only once `release_held()` is called (or the
backend closes, or 60 s passed): a backend that is late for as long as a test needs. Bounded
everywhere: heads
up to 1 MiB, bodies up to 256 MiB, every socket has a timeout.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

from proxy.devstack.poll import PollTimeout, wait_until
from proxy.devstack.ports import allocate_port
from tests.integration.sockserver import stop_threaded_server

__all__ = ["BadMessage", "Recorded", "RecordingBackend", "parse_request"]

TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
REQUEST_LINE_RE = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])")
FIELD_RE = re.compile(rb"(" + TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
MAX_HEAD = 1 << 20
MAX_BODY = 256 << 20
HOLD = b"hold_answer"
HOLD_LIMIT = 60.0


class BadMessage(Exception):
    """The bytes are not a valid HTTP/1.1 request message."""


@dataclass
class Recorded:
    index: int
    conn: int  # which backend connection carried it (1, 2, ...)
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]  # names lowercased, in wire order
    body: bytes  # decoded (chunk framing removed)
    framing: str  # "none", "length" or "chunked"
    raw: bytes  # the exact bytes of the message as received

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


def _lines_ok(head: bytes) -> None:
    stripped = head.replace(b"\r\n", b"")
    if b"\r" in stripped or b"\n" in stripped:
        raise BadMessage("bare CR or LF in the head")


def parse_request(buf: bytes | bytearray) -> tuple[dict, int] | None:
    """Parse one request from the start of `buf`.

    Returns (fields, consumed) for a complete message, None when more bytes are needed, and raises
    BadMessage for anything outside the strict grammar above.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadMessage("head too large")
        # A bare CR or LF is an error at once (a trailing CR may still get its LF).
        _lines_ok(bytes(buf[:-1] if buf[-1:] == b"\r" else buf))
        return None
    head = bytes(buf[:end])
    _lines_ok(head)
    lines = head.split(b"\r\n")
    m = REQUEST_LINE_RE.fullmatch(lines[0])
    if m is None:
        raise BadMessage(f"bad request line {lines[0][:80]!r}")
    method, target, minor = m.groups()
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        fm = FIELD_RE.fullmatch(line)
        if fm is None:
            raise BadMessage(f"bad field line {line[:80]!r}")
        headers.append((fm.group(1).lower(), fm.group(2)))
    hosts = [v for n, v in headers if n == b"host"]
    if minor == b"1" and len(hosts) != 1:
        raise BadMessage(f"{len(hosts)} Host headers")
    te = [v for n, v in headers if n == b"transfer-encoding"]
    cl = [v for n, v in headers if n == b"content-length"]
    pos = end + 4
    if te:
        if cl:
            raise BadMessage("both Transfer-Encoding and Content-Length")
        if len(te) != 1 or te[0].lower() != b"chunked":
            raise BadMessage(f"transfer-encoding {te!r}")
        body = bytearray()
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if len(buf) - pos > 64:
                    raise BadMessage("chunk-size line too long")
                return None
            size_line = bytes(buf[pos:nl])
            if HEX_RE.fullmatch(size_line) is None:
                raise BadMessage(f"bad chunk-size line {size_line[:40]!r}")
            size = int(size_line, 16)
            pos = nl + 2
            if size == 0:
                if len(buf) < pos + 2:
                    return None
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadMessage("trailer section forwarded")
                pos += 2
                framing = "chunked"
                break
            if len(body) + size > MAX_BODY:
                raise BadMessage("body too large")
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise BadMessage("chunk data not followed by CRLF")
            pos += size + 2
        body_b = bytes(body)
    elif cl:
        if len(cl) != 1 or not cl[0].isdigit() or len(cl[0]) > 18:
            raise BadMessage(f"content-length {cl!r}")
        n = int(cl[0])
        if n > MAX_BODY:
            raise BadMessage("body too large")
        if len(buf) < pos + n:
            return None
        body_b = bytes(buf[pos : pos + n])
        pos += n
        framing = "length"
    else:
        body_b = b""
        framing = "none"
    conn_tokens = {t.strip().lower() for n, v in headers if n == b"connection" for t in v.split(b",")}
    fields = {
        "method": method,
        "target": target,
        "version": b"1." + minor,
        "headers": headers,
        "body": body_b,
        "framing": framing,
        "raw": bytes(buf[:pos]),
        "close": b"close" in conn_tokens or (minor == b"0" and b"keep-alive" not in conn_tokens),
    }
    return fields, pos


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    errors: list[tuple[int, str, bytes]] = field(default_factory=list)
    incomplete: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0


class RecordingBackend:
    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self._lock_port = allocate_port()
        self.port = self._lock_port.port
        self._lock = threading.Lock()
        self._state = _State()
        self._stop = threading.Event()
        self._released = threading.Event()  # held answers go out (release_held, close)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(512)
        self._sock.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- what was seen -------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests)

    @property
    def errors(self) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return list(self._state.errors)

    @property
    def incomplete(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._state.incomplete)

    def count(self) -> int:
        with self._lock:
            return len(self._state.requests)

    def since(self, n: int) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests[n:])

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        try:
            wait_until(lambda: self.count() >= n, timeout, "recorded requests")
        except PollTimeout:
            raise TimeoutError(f"backend saw {self.count()} of {n} requests") from None
        return self.requests

    # -- serving -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._state.connections += 1
                cid = self._state.connections
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, cid), daemon=True).start()

    def _serve(self, conn: socket.socket, cid: int) -> None:
        conn.settimeout(120)
        buf = bytearray()
        try:
            while not self._stop.is_set():
                try:
                    parsed = parse_request(buf)
                except BadMessage as exc:
                    with self._lock:
                        self._state.errors.append((cid, str(exc), bytes(buf[:500])))
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                if parsed is None:
                    try:
                        data = conn.recv(262144)
                    except OSError:
                        data = b""
                    if not data:
                        if buf:
                            with self._lock:
                                self._state.incomplete.append((cid, bytes(buf)))
                        return
                    buf += data
                    continue
                fields, used = parsed
                del buf[:used]
                close = fields.pop("close")
                with self._lock:
                    index = len(self._state.requests)
                    self._state.requests.append(Recorded(index=index, conn=cid, **fields))
                if HOLD in fields["target"]:
                    self._released.wait(HOLD_LIMIT)
                body = b"req=%d" % index
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                    b"X-Req-Index: %d\r\n" % (len(body), index)
                )
                if close:
                    head += b"Connection: close\r\n"
                conn.sendall(head + b"\r\n" + (b"" if fields["method"] == b"HEAD" else body))
                if close:
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def release_held(self) -> None:
        """Answer the requests held by ``hold_answer``, and every later one at once."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        stop_threaded_server(self._stop, self._sock, self._lock, self._conns, self._thread, self._lock_port)

    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
