"""Who listens on a TCP port: the listening sockets in /proc/net/tcp{,6} and the processes holding
them (a /proc/<pid>/fd scan for the socket's inode), for an error message that names the holder.

Linux only; elsewhere, or for another user's process we cannot look into, the answer says less
(the socket's address and owner uid, or nothing).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "describe_listeners", "find_listeners", "parse_proc_net_tcp"]

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


@dataclass(frozen=True)
class Listener:
    address: str  # "127.0.0.1:6432", "[::]:6432"
    uid: int
    inode: int
    pid: int | None = None
    program: str = ""  # /proc/<pid>/comm


def _decode_address(hex_addr: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words))
    return f"[{ipaddress.IPv6Address(words).compressed}]"


def parse_proc_net_tcp(text: str, port: int) -> list[Listener]:
    """Listening sockets on `port` in the text of /proc/net/tcp or /proc/net/tcp6."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        addr_hex, _, port_hex = fields[1].partition(":")
        if int(port_hex, 16) != port:
            continue
        out.append(Listener(f"{_decode_address(addr_hex)}:{port}", int(fields[7]), int(fields[9])))
    return out


def _owners(inodes: set[int], proc: Path) -> dict[int, tuple[int, str]]:
    """inode -> (pid, program) for the sockets we may look at."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, tuple[int, str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in found:
                try:
                    program = (entry / "comm").read_text().strip()
                except OSError:
                    program = ""
                found[inode] = (int(entry.name), program)
        if len(found) == len(inodes):
            break
    return found


def find_listeners(port: int, proc: Path = Path("/proc")) -> list[Listener]:
    """Every listening TCP socket on `port` (any address), with its process when visible."""
    listeners: list[Listener] = []
    for name in ("tcp", "tcp6"):
        try:
            listeners += parse_proc_net_tcp((proc / "net" / name).read_text(), port)
        except OSError:
            continue
    if not listeners:
        return []
    owners = _owners({item.inode for item in listeners}, proc)
    return [
        Listener(item.address, item.uid, item.inode, *owners[item.inode]) if item.inode in owners else item
        for item in listeners
    ]


def describe_listeners(port: int, proc: Path = Path("/proc")) -> str:
    """What holds `port`, in words: "pid 1234 (postgres) listens on 127.0.0.1:6432", ..."""
    parts = []
    for item in find_listeners(port, proc):
        if item.pid is not None:
            parts.append(f"pid {item.pid} ({item.program or '?'}) listens on {item.address}")
        else:
            parts.append(f"a process of uid {item.uid} (not visible to us) listens on {item.address}")
    if not parts:
        return "no listening socket: a socket bound to it without SO_REUSEADDR holds it"
    return "; ".join(parts)
