"""Leave a loopback port the way a server that just stopped leaves it: no listener, and a closed
connection in TIME_WAIT on the server side (the server closed first), as `tierproxy demo` stopped
with Ctrl-C leaves its ports for a minute."""

from __future__ import annotations

import socket
from pathlib import Path

TIME_WAIT = "06"  # the "st" column of /proc/net/tcp


def time_wait_on(port: int) -> bool:
    """Whether a connection with local port `port` is in TIME_WAIT (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].partition(":")[2], 16) == port and fields[3] == TIME_WAIT:
            return True
    return False


def leave_time_wait(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(1)
        with socket.create_connection((host, port), timeout=5) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: it is the one left in TIME_WAIT
            assert client.recv(1) == b""
    assert time_wait_on(port), f"no TIME_WAIT connection on port {port}"
