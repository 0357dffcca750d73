"""tierproxy dbproxy and its servers: md5 both ways, replicas too far behind, a primary lost
inside a transaction."""

from __future__ import annotations

import psycopg
import pytest

from proxy.devstack.poll import wait_until


def _wait(predicate, what: str, timeout: float = 20.0):
    return wait_until(predicate, timeout, what)


def _usable(proxy) -> dict[str, bool]:
    return {b["name"]: b["usable"] for b in proxy.status()["backends"]}


def test_md5_to_clients_and_to_servers(pg_cluster_factory, dbproxy_factory):
    # The servers ask the proxy for md5; the proxy asks its clients for md5.
    cluster = pg_cluster_factory(replicas=1, auth="md5")
    proxy = dbproxy_factory(cluster, auth_method="md5")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT current_setting('password_encryption')").fetchone() == ("md5",)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert conn.execute("/* tierproxy:primary */ SELECT pg_is_in_recovery()").fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(proxy.dsn().replace("app-secret", "wrong"))


def test_replicas_further_behind_than_max_lag_get_no_reads(pg_cluster_factory, dbproxy_factory):
    cluster = pg_cluster_factory(replicas=2)
    cluster.primary.psql("CREATE TABLE lagging (a int)")
    cluster.wait_for_replicas_caught_up()
    proxy = dbproxy_factory(cluster, extra='[routing]\nmax_lag_seconds = 0.5\nread_your_writes = "off"\n'
                                          'balance = "statement"\n')  # the reads spread over both replicas
    _wait(lambda: _usable(proxy) == {"primary": True, "replica1": True, "replica2": True}, "all usable")
    for replica in cluster.replicas:
        replica.set_apply_delay(4000)
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO lagging VALUES (1)")
        _wait(lambda: not any(_usable(proxy)[r] for r in ("replica1", "replica2")), "replicas too far behind")
        ports = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(5)}
        assert ports == {cluster.primary.port}
        for replica in cluster.replicas:
            replica.set_apply_delay(0)
        _wait(lambda: all(_usable(proxy).values()), "replicas caught up")
        ports = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(10)}
        assert ports == {r.port for r in cluster.replicas}


def test_a_primary_lost_inside_a_transaction_ends_the_session_with_an_error(pg_cluster_factory, dbproxy_factory):
    cluster = pg_cluster_factory(replicas=1)
    proxy = dbproxy_factory(cluster)
    conn = psycopg.connect(proxy.dsn(), autocommit=True)
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    cluster.primary.kill()
    with pytest.raises(psycopg.OperationalError) as exc:
        conn.execute("SELECT 2")
    assert exc.value.sqlstate in ("08006", "57P01", None), exc.value  # FATAL, then the close
    conn.close()
    # A crash ends every session whose own server connection it took (as direct); new clients
    # log in through the replica (the primary refuses connections) and read there.
    with psycopg.connect(proxy.dsn(), autocommit=True) as reader:
        assert reader.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    assert proxy.process.running
