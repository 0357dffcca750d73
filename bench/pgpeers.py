"""The PostgreSQL peers tierproxy dbproxy is compared with, configured for one devstack cluster.

- PgBouncer (Debian `pgbouncer`): transaction pooling, primary only; clients authenticate with md5
  against a userlist, PgBouncer logs in to the primary as the cluster's superuser. One process
  (PgBouncer is single-threaded).
- pgpool-II (Debian `pgpool2`): `backend_clustering_mode = 'streaming_replication'` with
  `load_balance_mode = on` over the primary and both replicas; it asks clients for a clear-text
  password (`allow_clear_text_frontend_auth`) so it can answer the servers' SCRAM challenges
  itself; `num_init_children` = clients + 2, so no client waits for a pgpool child.

Both refuse to run as root, so as root they run as the cluster's OS user (`setpriv`), with their
config, pid and socket files in a directory that user owns. Readiness is a real login through
them (`SELECT 1` via psycopg), polled, never a sleep.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from proxy.devstack.pgenv import as_user, chown_to, conf_value
from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.postgres import HOST, PgCluster
from proxy.devstack.process import ManagedProcess

__all__ = ["Peer", "start_pgbouncer", "start_pgpool"]

READY_TIMEOUT = 30.0


class Peer:
    """A running peer: `.port`, `.process`, `.dsn`; `close()` stops it and frees the port."""

    def __init__(self, name: str, process: ManagedProcess, port_lock: PortLock, user: str, password: str) -> None:
        self.name = name
        self.process = process
        self.port_lock = port_lock
        self.user = user
        self.password = password

    @property
    def port(self) -> int:
        return self.port_lock.port

    @property
    def dsn(self) -> str:
        return f"host={HOST} port={self.port} user={self.user} password={self.password} dbname=postgres sslmode=disable"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Peer:
        def probe() -> bool:
            with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        self.process.wait_ready(probe, timeout)
        return self

    def close(self) -> None:
        try:
            self.process.terminate(10.0)
        finally:
            self.port_lock.release()


def _owned_dir(cluster: PgCluster, workdir: Path, name: str) -> Path:
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    chown_to(workdir, cluster.os_user)
    chown_to(d, cluster.os_user)
    return d


def _write(cluster: PgCluster, path: Path, text: str) -> None:
    path.write_text(text)
    chown_to(path, cluster.os_user)


def start_pgbouncer(cluster: PgCluster, workdir: Path, binary: str, *, pool_size: int,
                    user: str = "app", password: str = "app-secret", pool_mode: str = "transaction") -> Peer:  # fmt: skip
    """PgBouncer in front of the primary: `pool_mode` transaction (the benches' peer: what PgBouncer
    is deployed for) or session (scripts/pg_cpu_split.py compares both)."""
    assert cluster.primary is not None
    assert pool_mode in ("transaction", "session"), pool_mode
    d = _owned_dir(cluster, workdir, "pgbouncer" if pool_mode == "transaction" else f"pgbouncer-{pool_mode}")
    lock = allocate_port(HOST)
    _write(cluster, d / "userlist.txt", f'"{user}" "{password}"\n')
    _write(cluster, d / "pgbouncer.ini", "\n".join([
        "[databases]",
        (f"postgres = host={HOST} port={cluster.primary.port} dbname=postgres "
         f"user={cluster.user} password={cluster.password}"),
        "[pgbouncer]",
        f"listen_addr = {HOST}", f"listen_port = {lock.port}", f"unix_socket_dir = {d}",
        "auth_type = md5", f"auth_file = {d / 'userlist.txt'}",
        f"pool_mode = {pool_mode}", f"default_pool_size = {pool_size}", "max_client_conn = 1000",
        "server_tls_sslmode = disable", f"pidfile = {d / 'pgbouncer.pid'}",
        "log_connections = 0", "log_disconnections = 0",
    ]) + "\n")  # fmt: skip
    process = ManagedProcess(as_user(cluster.os_user, [binary, str(d / "pgbouncer.ini")]), name="pgbouncer",
                             log_dir=workdir)  # fmt: skip
    peer = Peer("pgbouncer", process, lock, user, password)
    try:
        return peer.wait_ready()
    except BaseException:
        peer.close()
        raise


def start_pgpool(cluster: PgCluster, workdir: Path, binary: str, *, children: int) -> Peer:
    assert cluster.primary is not None
    d = _owned_dir(cluster, workdir, "pgpool")
    lock = allocate_port(HOST)
    pcp = allocate_port(HOST)
    settings: dict[str, str | int | bool] = {
        "listen_addresses": HOST, "port": lock.port, "unix_socket_directories": str(d),
        "pcp_listen_addresses": "", "pcp_port": pcp.port, "pcp_socket_dir": str(d),
        "backend_clustering_mode": "streaming_replication", "load_balance_mode": True,
        "num_init_children": children, "max_pool": 1, "child_life_time": 0,
        "connection_cache": True, "enable_pool_hba": False, "pool_passwd": "",
        "allow_clear_text_frontend_auth": True, "sr_check_period": 1,
        "sr_check_user": cluster.user, "sr_check_password": cluster.password,
        "health_check_period": 0, "failover_on_backend_error": False, "use_watchdog": False,
        "pid_file_name": str(d / "pgpool.pid"), "logdir": str(d), "log_min_messages": "warning",
        "statement_level_load_balance": True, "ssl": False,
    }  # fmt: skip
    servers = [cluster.primary, *cluster.replicas]
    for i, server in enumerate(servers):
        settings |= {f"backend_hostname{i}": HOST, f"backend_port{i}": server.port, f"backend_weight{i}": 1,
                     f"backend_flag{i}": "DISALLOW_TO_FAILOVER", f"backend_data_directory{i}": str(server.data_dir)}  # fmt: skip
    _write(cluster, d / "pgpool.conf", "".join(f"{k} = {conf_value(v)}\n" for k, v in settings.items()))
    _write(cluster, d / "pcp.conf", "")
    _write(cluster, d / "pool_hba.conf", "")
    argv = [binary, "-n", "-f", str(d / "pgpool.conf"), "-F", str(d / "pcp.conf"), "-a", str(d / "pool_hba.conf")]
    process = ManagedProcess(as_user(cluster.os_user, argv), name="pgpool", log_dir=workdir)
    pcp.release()  # only needed to pick a free number; pgpool binds it itself
    peer = Peer("pgpool", process, lock, cluster.user, cluster.password)
    try:
        return peer.wait_ready()
    except BaseException:
        peer.close()
        raise
