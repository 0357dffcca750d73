"""Cancel keys: the BackendKeyData (pid, secret) each client session was given, -> the session.

A client's CancelRequest arrives on a new connection with only that key; `CancelKeys` finds the
session it names, whose `cancel_targets()` are the server connections to send the server's own
CancelRequest to (`server.send_cancel`). A session gets its server's real key when that key is
free (so pg_backend_pid() and NOTIFY pids agree with what the client was told), else one of ours.
With workers, a key another worker issued is relayed by the supervisor to all of them
(`route_worker_message`, which also hands on console queries that need every worker).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .server import ServerConn

__all__ = ["CancelKeys", "Cancellable", "route_worker_message"]


class Cancellable(Protocol):
    def cancel_targets(self) -> Sequence[ServerConn]:
        """The server connections running something for this session now."""
        ...


class CancelKeys:
    def __init__(self) -> None:
        self._sessions: dict[tuple[int, int], Cancellable] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def register(self, session: Cancellable, key: tuple[int, int] | None = None) -> tuple[int, int]:
        """The session's key: `key` (its server's own) if given and free, else a new one."""
        if key is not None and key[0] > 0 and key not in self._sessions:
            self._sessions[key] = session
            return key
        while True:
            key = (secrets.randbelow(1 << 31 - 1) + 1, secrets.randbelow(1 << 32))
            if key not in self._sessions:
                self._sessions[key] = session
                return key

    def get(self, pid: int, secret: int) -> Cancellable | None:
        return self._sessions.get((pid, secret))

    def forget(self, session: Cancellable, key: tuple[int, int]) -> None:
        """The session ended: its key is free again (if it is still that session's)."""
        if self._sessions.get(key) is session:
            del self._sessions[key]


def route_worker_message(workers: Any, index: int, msg: dict[str, Any],
                         answer_console: Callable[[int, int], None]) -> None:  # fmt: skip
    """The supervisor of a PostgreSQL front with workers (dbproxy, shard), on worker `index`'s
    message: a CancelRequest with a key that worker did not issue is asked of every worker (the one
    that issued it acts); a console query that needs every worker's figures ("rid" says which
    request) is answered by `answer_console(index, rid)`. `workers` is proxy/core/workers.py's
    WorkerSet."""
    op = msg.get("op")
    if op == "cancel":
        workers.broadcast({"op": "cancel", "pid": msg["pid"], "secret": msg["secret"]})
    elif op == "console" and "rid" in msg:
        answer_console(index, msg["rid"])
