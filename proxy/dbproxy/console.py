"""The admin console on the virtual database `tierproxy`: pgbouncer-style SHOW commands.

    psql -h 127.0.0.1 -p 6432 -U app tierproxy -c 'SHOW POOLS'

Pure: `run_console(sql, snapshot)` turns a command and a snapshot of the daemon (plain dicts, see
`DbProxyDaemon.console_snapshot`) into the wire bytes of the answer (RowDescription, DataRows,
CommandComplete, or an ErrorResponse); the session adds ReadyForQuery. The framework (matching,
rendering) is the shared front end's (proxy/pgfront/console.py); this module holds the dbproxy's
commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.pgfront import console as framework
from proxy.pgfront.console import Command, Rows

from .cluster_view import CLUSTER_COLUMNS, cluster_rows
from .qcache_ops import show_cache

__all__ = ["COMMANDS", "run_console"]


def _pools(s: Mapping[str, Any]) -> Rows:
    cols = ("database", "user", "backend", "role", "cl_active", "cl_waiting", "sv_active",
            "sv_idle", "options")  # fmt: skip
    rows = [
        (p["database"], p["user"], p["backend"], "primary" if p["backend"] == "primary" else "replica",
         p.get("clients", 0), p.get("waiting", 0), p["active"], p["idle"],
         " ".join(f"{k}={v}" for k, v in sorted(p["options"].items())))
        for p in s["pools"]
    ]  # fmt: skip
    return cols, rows


def _servers(s: Mapping[str, Any]) -> Rows:
    cols = ("backend", "role", "user", "database", "state", "addr", "port", "remote_pid",
            "connect_time", "client_addr", "client_port", "prepared_statements", "tx_status")  # fmt: skip
    rows = [
        (c["backend"], c["role"], c["user"], c["database"], c["state"], c["addr"], c["port"],
         c["pid"], c["connect_time"], c.get("client_addr"), c.get("client_port"), c["prepared"],
         c["tx_status"])
        for c in s["servers"]
    ]  # fmt: skip
    return cols, rows


def _clients(s: Mapping[str, Any]) -> Rows:
    cols = ("user", "database", "state", "addr", "port", "connect_time", "statements",
            "in_transaction", "transaction_backend", "pinned", "replica", "last_backend", "last_reason",
            "servers", "tls")  # fmt: skip
    rows = [
        (c["user"], c["database"], c["state"], c["addr"], c["port"], c["connect_time"],
         c["statements"], c["in_transaction"], c["transaction_backend"], c["pinned"], c.get("replica"),
         c["last_backend"], c["last_reason"], ",".join(c["servers"]), c.get("tls", False))
        for c in s["clients"]
    ]  # fmt: skip
    return cols, rows


def _backends(s: Mapping[str, Any]) -> Rows:
    cols = ("name", "role", "address", "up", "usable", "lag_bytes", "lag_seconds", "replay_lsn",
            "outstanding", "weight", "sessions")  # fmt: skip
    rows = [
        (b["name"], b["role"], b["address"], b["up"], b["usable"], b.get("lag_bytes"),
         b.get("lag_seconds"), b.get("replay_lsn"), b.get("outstanding", 0), b.get("weight"), b.get("sessions"))
        for b in s["backends"]
    ]  # fmt: skip
    return cols, rows


def _stats(s: Mapping[str, Any]) -> Rows:
    cols = ("backend", "reason", "statements")
    rows = [(backend, reason, n) for backend, reason, n in sorted(s["routes"])]
    return cols, rows


def _cluster(s: Mapping[str, Any]) -> Rows:
    """The Patroni cluster the proxy follows (no rows with a static topology): cluster_view.py."""
    return CLUSTER_COLUMNS, cluster_rows(s.get("cluster"))


def _version(s: Mapping[str, Any]) -> Rows:
    return ("version",), [(f"tierproxy dbproxy {s['version']}",)]


def _help(_s: Mapping[str, Any]) -> Rows:
    return ("command",), [(f"SHOW {name}",) for name in sorted(COMMANDS)]


COMMANDS: dict[str, Command] = {
    "POOLS": _pools,
    "SERVERS": _servers,
    "CLIENTS": _clients,
    "BACKENDS": _backends,
    "CLUSTER": _cluster,
    "CACHE": show_cache,  # the query cache (qcache_ops.py)
    "STATS": _stats,
    "VERSION": _version,
    "HELP": _help,
}


def run_console(sql: str, snapshot: Mapping[str, Any]) -> bytes:
    return framework.run_console(sql, snapshot, COMMANDS)
