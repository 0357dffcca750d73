"""bench/failover.py's pure parts: a round's figures from the acknowledgements and errors, and the
HAProxy configuration (Patroni's documented set-up)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.failover import haproxy_config, measure


def test_measure_counts_from_the_kill_to_the_first_write_on_the_new_primary() -> None:
    acks = [(9.0, 5432), (10.5, 5432), (12.25, 5433), (13.0, 5433)]  # one write still on the old one after
    figures = measure(10.0, 5433, acks, errors=[8.0, 10.1, 11.0], clients_with_errors=2)
    assert figures == {"first_write_s": 2.25, "errors": 2, "clients_with_errors": 2, "acked_after_kill": 3,
                       "acked_elsewhere_after_kill": 1}  # fmt: skip


def test_measure_says_none_when_no_write_reached_the_new_primary() -> None:
    figures = measure(10.0, 5433, [(9.0, 5432)], errors=[], clients_with_errors=0)
    assert figures["first_write_s"] is None and figures["errors"] == 0


def test_haproxy_checks_patronis_primary_endpoint_on_every_node() -> None:
    nodes = [SimpleNamespace(name=f"node{i}", port=5430 + i, api_port=8000 + i) for i in (1, 2, 3)]
    text = haproxy_config(6000, 6001, SimpleNamespace(nodes=nodes), "3s", 3, 2)  # type: ignore[arg-type]
    lines = [line.strip() for line in text.splitlines()]
    assert "option httpchk GET /primary" in lines and "http-check expect status 200" in lines
    assert "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions" in lines
    assert [line for line in lines if line.startswith("server ")] == [
        f"server node{i} 127.0.0.1:{5430 + i} check port {8000 + i}" for i in (1, 2, 3)]
