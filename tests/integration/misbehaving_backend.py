"""A backend that breaks HTTP/1.1 on purpose, chosen by the request path.

`MisbehavingBackend` is a threaded loopback socket server. It reads each request (head, and a
Content-Length or chunked body), then acts on the first path segment:

| path | answer |
| --- | --- |
| `/ok/<tag>` | a correct 200, body ``ok:<tag>``, keep-alive |
| `/short/<tag>` | Content-Length 100, 10 body bytes, then close |
| `/long/<tag>` | Content-Length 5, ``hello`` and, in the same write, a whole extra response |
| `/garbage/<tag>` | ``HELLO WORLD`` lines instead of a status line, then waits |
| `/midclose/<tag>` | Content-Length 1000, 100 body bytes, then close |
| `/closenow/<tag>` | close before any byte |
| `/clte/<tag>` | Content-Length 3 and Transfer-Encoding chunked; the chunked body is ``hello`` |
| `/continue/<tag>` | an unsolicited ``100 Continue``, then a correct 200 ``ok:<tag>`` |
| `/continuegarbage/<tag>` | ``100 Continue``, then garbage |
| `/headbody/<tag>` | for HEAD: Content-Length 5 *and* ``hello``; for GET a correct 200 |
| `/hang/<tag>` | never answers (the socket stays open until the peer or the server closes) |
| `/upgrade101/<tag>` | ``101 Switching Protocols`` although the request asked for no upgrade |

Every extra, leaked or garbage payload contains ``SMUGGLED`` so a client can check it never
receives one. Bounded: heads up to 1 MiB, socket timeouts everywhere.
"""

from __future__ import annotations

import socket
import threading

from proxy.devstack.ports import allocate_port
from tests.integration.sockserver import stop_threaded_server

__all__ = ["EXTRA", "MisbehavingBackend"]

EXTRA = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED!"


def _ok(tag: bytes, close: bool = False) -> bytes:
    body = b"ok:" + tag
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), conn, body)


class MisbehavingBackend:
    def __init__(self, name: str = "bad") -> None:
        self.name = name
        self._port_lock = allocate_port()
        self.port = self._port_lock.port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.seen: list[tuple[bytes, bytes]] = []  # (method, path) of every request read
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(256)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytearray) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buf:
            if len(buf) > 1 << 20:
                return None
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n")
        head = bytes(buf[:end])
        del buf[: end + 4]
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ", 2)
        cl = 0
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                cl = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = True
        if chunked:
            while b"\r\n0\r\n\r\n" not in b"\r\n" + bytes(buf):
                data = conn.recv(65536)
                if not data:
                    return None
                buf += data
            cut = (b"\r\n" + bytes(buf)).index(b"\r\n0\r\n\r\n") + 5
            del buf[:cut]
        else:
            while len(buf) < cl:
                data = conn.recv(65536)
                if not data:
                    return None
                buf += data
            del buf[:cl]
        return method, path

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        buf = bytearray()
        try:
            while not self._stop.is_set():
                req = self._read_request(conn, buf)
                if req is None:
                    return
                method, path = req
                with self._lock:
                    self.seen.append((method, path))
                parts = path.split(b"/")
                kind = parts[1] if len(parts) > 1 else b""
                tag = parts[2] if len(parts) > 2 else b"-"
                if kind == b"ok":
                    conn.sendall(_ok(tag))
                elif kind == b"short":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    return
                elif kind == b"long":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + EXTRA)
                elif kind == b"garbage":
                    conn.sendall(b"HELLO WORLD SMUGGLED\r\nfoo\r\n\r\n")
                elif kind == b"midclose":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"m" * 100)
                    return
                elif kind == b"closenow":
                    return
                elif kind == b"clte":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n"
                    )
                elif kind == b"continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(tag))
                elif kind == b"continuegarbage":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nSMUGGLED garbage\r\n\r\n")
                elif kind == b"headbody":
                    if method == b"HEAD":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + EXTRA)
                    else:
                        conn.sendall(_ok(tag))
                elif kind == b"hang":
                    while not self._stop.is_set():
                        try:
                            if not conn.recv(65536):
                                return
                        except TimeoutError:
                            continue
                elif kind == b"upgrade101":
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
                    conn.sendall(EXTRA)
                else:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        stop_threaded_server(self._stop, self._sock, self._lock, self._conns, self._thread, self._port_lock)
