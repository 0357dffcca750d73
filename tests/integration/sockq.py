"""The kernel's queues of a loopback TCP socket, from /proc/net/tcp: what tests wait on instead of
a fixed sleep when the question is whether a daemon has read (or been sent) some bytes."""

from __future__ import annotations


def queues(local_port: int, remote_port: int) -> tuple[int, int]:
    """The send and receive queues of the socket local_port -> remote_port: bytes written but not
    yet acknowledged by the peer, and bytes received but not yet read by the socket's owner."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no socket {local_port} -> {remote_port}")


def rx_queue(local_port: int, remote_port: int) -> int:
    """Bytes received but not yet read by its owner on the socket local_port -> remote_port."""
    return queues(local_port, remote_port)[1]
