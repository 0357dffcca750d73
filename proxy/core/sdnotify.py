"""sd_notify(3) without libsystemd: readiness, reload and stop notices for systemd's Type=notify.

systemd starts a `Type=notify` service with `$NOTIFY_SOCKET` set to an AF_UNIX datagram socket (a
path, or `@name` in the abstract namespace) and waits for a datagram `READY=1` before it considers
the service started (and starts the units ordered after it). The protocol is newline-separated
`KEY=VALUE` fields in one datagram; we send:

    READY=1, STATUS=...              once the daemon serves (after `start()`), and after a reload
    RELOADING=1, MONOTONIC_USEC=...  when a reload (SIGHUP) begins
    STOPPING=1, STATUS=...           when a drain (SIGTERM) begins

`Notifier.from_environ()` takes `$NOTIFY_SOCKET` out of the environment (as sd_notify's
`unset_environment` does) so that child processes (the lb's worker processes, a handler's
subprocess) do not inherit it and send notices of their own, which systemd would ignore or, with
NotifyAccess=all, misread. Without `$NOTIFY_SOCKET` every call is a no-op returning False.

Sending never raises: a full or vanished socket is logged once and the daemon carries on serving.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

__all__ = ["ENV", "Notifier", "message", "socket_address"]

ENV = "NOTIFY_SOCKET"
log = logging.getLogger("tierproxy.sdnotify")


def socket_address(value: str | None) -> str | None:
    """$NOTIFY_SOCKET -> the address for sendto(): a path as is, `@name` -> the abstract name
    ("\\0name"); None for an unset, empty or unsupported value (systemd 253's vsock: form)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def message(**fields: object) -> bytes:
    """KEY=VALUE lines (READY=1 ...). A value may not contain a newline: it would end the field."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"{key}: a notify field cannot contain a newline")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(socket_address(env.pop(ENV, None)))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, data: bytes) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)  # never stall the event loop on a full receive queue
                s.sendto(data, self.address)
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str = "serving") -> bool:
        return self.send(message(READY=1, STATUS=status, MAINPID=os.getpid()))

    def reloading(self) -> bool:
        # MONOTONIC_USEC: systemd >= 253 (Type=notify-reload) wants the CLOCK_MONOTONIC time of
        # the reload's start; older ones ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(message(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading"))

    def stopping(self, status: str = "draining") -> bool:
        return self.send(message(STOPPING=1, STATUS=status))
