"""The demo's database tier under Patroni: etcd, a primary and replicas as Patroni nodes, the dbproxy.

`tierproxy demo` (proxy/demo.py) calls `start_demo_database(...)`, which starts one local etcd
member and `1 + replicas` Patroni nodes of PostgreSQL (proxy/devstack/patroni.py), creates the
notes schema on the leader, writes a patronictl config, and starts `tierproxy dbproxy` on the
demo's fixed ports with `[topology] source = "patroni"` (it reads the cluster from etcd, watched).
`banner_lines()`, `failover_lines()` and `cache_lines()` are what the demo prints: where everything
runs, commands a user can paste to kill the primary and watch writes go on through the same
address, and psql commands that show a query cache hit and an invalidation. The dbproxy runs with
the query cache on (`CACHE_CONFIG`: the web workers' listing page carries the cache hint) and
LISTENs for the `CACHE_TRIGGER` installed on `notes`, so a write made directly on the primary
(bypassing the proxy) invalidates too.
`close()` stops the proxy, Patroni, PostgreSQL and etcd.
"""

from __future__ import annotations

from pathlib import Path

from proxy.devstack.patroni import PatroniCluster, PatroniNode, start_patroni_cluster
from proxy.devstack.patroni_dbproxy import PatroniDbProxy, start_patroni_dbproxy, write_patronictl_config
from workers.notes import LISTING

__all__ = ["DemoDatabase", "start_demo_database"]

START_TIMEOUT = 150.0  # seconds: initdb and two base backups on a loaded 2-core machine
PASSWORD = "app-secret"
CACHE_CONFIG = '[cache]\nenabled = true\n[cache.listen]\ndatabases = ["postgres"]\n'
# docs/dbproxy.md's trigger: a NOTIFY on every write to notes, from any client.
CACHE_TRIGGER = (
    "CREATE OR REPLACE FUNCTION tierproxy_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM pg_notify('tierproxy_cache', TG_TABLE_NAME); RETURN NULL; END $$; "
    "DROP TRIGGER IF EXISTS notes_cache_notify ON notes; "
    "CREATE TRIGGER notes_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notes "
    "FOR EACH STATEMENT EXECUTE FUNCTION tierproxy_cache_notify()"
)


class DemoDatabase:
    """The started parts (`cluster`, `dbproxy`, `patronictl_config`); see the module docstring."""

    def __init__(self, cluster: PatroniCluster, dbproxy: PatroniDbProxy, patronictl_config: Path) -> None:
        self.cluster = cluster
        self.dbproxy = dbproxy
        self.patronictl_config = patronictl_config

    def dsn(self) -> str:
        return self.dbproxy.dsn("app", "postgres")

    def _psql(self, database: str = "postgres") -> str:
        return f"PGPASSWORD={PASSWORD} psql -h {self.dbproxy.host} -p {self.dbproxy.port} -U app {database}"

    def _leader(self) -> PatroniNode | None:
        name = self.cluster.leader_name()
        return self.cluster.node(name) if name is not None else None

    def banner_lines(self) -> list[str]:
        """One line per part: the dbproxy, each Patroni node, etcd."""
        assert self.cluster.etcd is not None
        leader = self._leader()
        p = self.dbproxy
        lines = [f"  dbproxy         {p.host}:{p.port} (admin http://{p.host}:{p.admin_port}/status) following "
                 f"Patroni (etcd {self.cluster.etcd.url}, scope {self.cluster.scope})"]  # fmt: skip
        for node in self.cluster.nodes:
            role = "primary" if leader is not None and node.name == leader.name else "replica"
            lines.append(f"    {node.name}  PostgreSQL 127.0.0.1:{node.port} ({role} at start), Patroni REST {node.api_url}")
        return lines

    def failover_lines(self) -> list[str]:
        """How to watch writes, kill the primary and see the proxy follow."""
        p = self.dbproxy
        admin = f"http://{p.host}:{p.admin_port}"
        leader = self._leader()
        other = next((n.name for n in self.cluster.nodes if leader is None or n.name != leader.name), "node2")
        insert = "INSERT INTO notes (body, worker) VALUES ('tick', 'psql') RETURNING id, inet_server_port()"
        lines = [
            "database failover (Patroni promotes a replica; the dbproxy holds writes, then sends them to it):",
            f"  while sleep 0.5; do {self._psql()} -Atc \"{insert}\"; done   # writes; the port is the primary's",
            "  in another terminal, kill the primary's postmaster (whichever node leads now):",
        ]
        for node in self.cluster.nodes:
            now = " (the primary now)" if leader is not None and node.name == leader.name else ""
            lines.append(f"  kill -9 $(head -1 {node.data_dir}/postmaster.pid)   # {node.name}{now}")
        lines += [
            f"  {self._psql('tierproxy')} -c 'SHOW CLUSTER'   # leader, replicas, timeline, lag",
            f"  curl -s {admin}/status    # \"topology\": the last failovers (from, to, hold_seconds, held, errors)",
            f"  curl -s {admin}/metrics | grep failover",
            f"  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"candidate\": \"{other}\"}}' {admin}/switchover",
            f"  patronictl -c {self.patronictl_config} list     # Patroni's own view",
        ]  # fmt: skip
        return lines

    def cache_lines(self, lb_url: str) -> list[str]:
        """psql commands that show a query cache hit and an invalidation (through the proxy, and
        made directly on the primary, bypassing it)."""
        leader = self._leader()
        direct = (f"PGPASSWORD={self.cluster.password} psql -h 127.0.0.1 -p {leader.port} -U {self.cluster.superuser} "
                  "postgres" if leader is not None else "psql (on the primary)")  # fmt: skip
        show = f"{self._psql('tierproxy')} -c 'SHOW CACHE'"
        return [
            "query cache (the dbproxy answers repeated reads itself; writes invalidate):",
            f"  curl -s {lb_url}/notes   # the listing page: its statement carries /* tierproxy:cache ttl=30 */",
            f"  {self._psql()} -c '{LISTING}'   # run it twice: a miss, then a hit",
            f"  {show}   # hits, misses, entries and invalidations, per table (row *: totals)",
            f"  curl -s -d 'new note' {lb_url}/notes; {show}   # a write through the proxy: notes invalidated",
            f"  {direct} -c \"INSERT INTO notes (body, worker) VALUES ('direct', 'psql')\"; {show}"
            "   # bypassing the proxy: a trigger NOTIFYs, the proxy invalidates",
            f"  curl -s {self.dbproxy_admin()}/metrics | grep query_cache",
        ]

    def dbproxy_admin(self) -> str:
        return f"http://{self.dbproxy.host}:{self.dbproxy.admin_port}"

    def close(self) -> None:
        try:
            self.dbproxy.close()
        finally:
            self.cluster.close()


def start_demo_database(workdir: Path, *, db_port: int, db_admin_port: int, schema: str,
                        replicas: int = 2) -> DemoDatabase:  # fmt: skip
    """etcd, `1 + replicas` Patroni nodes, `schema` run on the leader, the dbproxy on the given ports."""
    cluster = start_patroni_cluster(1 + replicas, log_dir=workdir / "patroni", scope="demo", timeout=START_TIMEOUT)
    try:
        cluster.leader().psql(schema)
        cluster.leader().psql(CACHE_TRIGGER)
        config = write_patronictl_config(cluster, workdir / "patronictl.yml")
        dbproxy = start_patroni_dbproxy(cluster, log_dir=workdir, users={"app": PASSWORD}, source="etcd",
                                        port=db_port, admin_port=db_admin_port, hold_timeout=30.0,
                                        extra=CACHE_CONFIG)  # fmt: skip
    except BaseException:
        cluster.close()
        raise
    return DemoDatabase(cluster, dbproxy, config)
