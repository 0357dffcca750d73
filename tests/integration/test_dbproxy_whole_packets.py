"""Whole packets in one read, through `tierproxy dbproxy` exactly as direct (issue 17).

The dbproxy takes two packets on a path of their own, without its framer and message queue: one
whole simple Query, and one whole Parse of the unnamed statement + Bind of it to the unnamed portal
+ [Describe of that portal] + Execute + Sync (what pgbench -M extended, psycopg and JDBC send per
statement). Each sequence below sends such packets, and packets just outside that shape (named
statements and portals, a Describe of the statement, two groups in one write, a packet in pieces
(its first piece shorter than a header too),
errors at Parse and at Execute, pipelining, a transaction), each in one write, to the primary
directly and through the proxy: the answers must be the same, message by message.
"""

from __future__ import annotations

import pytest

from proxy.devstack.poll import wait_until
from proxy.pgwire import encode
from proxy.pgwire.messages import ReadyForQuery
from tests.integration.pgraw import RawPg, shape
from tests.integration.sockq import rx_queue

INT4 = 23


def _unnamed(sql: str, params: tuple[bytes | None, ...] = (), *, describe: bool = True, oids: tuple[int, ...] = (),
             result_formats: tuple[int, ...] = ()) -> bytes:  # fmt: skip
    return (encode.parse("", sql, oids) + encode.bind("", "", params, result_formats=result_formats)
            + (encode.describe("P", "") if describe else b"") + encode.execute() + encode.sync())  # fmt: skip


@pytest.fixture(scope="module")
def packet_table(pg_cluster, dbproxy):
    pg_cluster.primary.psql("DROP TABLE IF EXISTS packet_t; CREATE TABLE packet_t (a int)")
    pg_cluster.wait_for_replicas_caught_up()
    return "packet_t"


def _sequence(c: RawPg) -> list[tuple[object, ...]]:
    steps = [
        # The shape itself, each twice (the second Parse is one the proxy has classified before).
        _unnamed("SELECT $1::int + 1", (b"41",)),
        _unnamed("SELECT $1::int + 1", (b"41",)),
        _unnamed("SELECT $1::int * 2", (b"21",), describe=False),
        _unnamed("SELECT $1::int * 2", (b"21",), describe=False),
        _unnamed("SELECT $1 + 1", (b"\0\0\0\x07",), oids=(INT4,), result_formats=(1,)),
        _unnamed("SELECT $1 + 1", (b"\0\0\0\x07",), oids=(INT4,), result_formats=(1,)),
        _unnamed("SELECT $1::text", (None,)),
        _unnamed("SELECT $1::text", (None,)),
        # Errors: at Parse (twice: known to the proxy the second time), at Execute.
        _unnamed("SELEC 1"),
        _unnamed("SELEC 1"),
        _unnamed("SELECT 1/$1::int", (b"0",)),
        _unnamed("SELECT 1/$1::int", (b"0",)),
        # The unnamed statement a packet made, used again by a Bind of its own.
        _unnamed("SELECT 'again'"),
        encode.bind("", "") + encode.execute() + encode.sync(),
        # Just outside the shape: a named portal, a named statement, a Describe of the statement.
        encode.parse("", "SELECT 3") + encode.bind("p1", "") + encode.describe("P", "p1") + encode.execute("p1")
        + encode.sync(),
        encode.parse("n1", "SELECT 4") + encode.bind("", "n1") + encode.execute() + encode.sync(),
        encode.bind("", "n1") + encode.execute() + encode.sync(),
        encode.parse("", "SELECT 5") + encode.bind("", "") + encode.describe("S", "") + encode.execute()
        + encode.sync(),
        # Two groups in one write; a packet and a Query in one write; Flush instead of Sync.
        _unnamed("SELECT 6") + _unnamed("SELECT 7"),
        _unnamed("SELECT 8") + encode.query("SELECT 9"),
        # A transaction: the writes go where its BEGIN went, the read after them too.
        encode.query("BEGIN"),
        _unnamed("INSERT INTO packet_t VALUES ($1)", (b"1",)),
        _unnamed("INSERT INTO packet_t VALUES ($1)", (b"2",)),
        _unnamed("SELECT count(*) FROM packet_t"),
        encode.query("ROLLBACK"),
        _unnamed("SELECT count(*) FROM packet_t"),
        # A failed transaction: the packet's Parse is refused (25P02) until ROLLBACK.
        encode.query("BEGIN"),
        _unnamed("SELECT 1/0"),
        _unnamed("SELECT 1"),
        encode.query("ROLLBACK"),
        # Simple queries on their path: one, several statements in one, an error.
        encode.query("SELECT 10"),
        encode.query("SELECT 11; SELECT 12"),
        encode.query("SELECT 1/0"),
        encode.query(""),
    ]  # fmt: skip
    out: list[tuple[object, ...]] = []
    for step in steps:
        c.send(step)
        for _ in range(step.count(encode.sync()) + step.count(b"Q\0")):
            out += shape(c.until(ReadyForQuery))
    # Pipelined without waiting: the second packet arrives while the first is answered.
    c.send(_unnamed("SELECT 13"))
    c.send(_unnamed("SELECT 14"))
    c.send(encode.query("SELECT 15"))
    for _ in range(3):
        out += shape(c.until(ReadyForQuery))
    # One packet in two writes (framed as usual, wherever the pieces fall).
    whole = _unnamed("SELECT $1::int - 1", (b"17",))
    c.send(whole[:9])
    c.send(whole[9:])
    out += shape(c.until(ReadyForQuery))
    # Its first read shorter than a message header: the rest is sent once the server (the proxy,
    # or PostgreSQL directly) has read the three bytes alone (its socket's receive queue empty).
    server_port, client_port = c.sock.getpeername()[1], c.sock.getsockname()[1]
    for packet in (whole, encode.query("SELECT 16")):
        c.send(packet[:3])
        wait_until(lambda: rx_queue(server_port, client_port) == 0, 10.0, "the server reads the first 3 bytes")
        c.send(packet[3:])
        out += shape(c.until(ReadyForQuery))
    return out


def test_whole_packets_are_answered_as_direct(pg_cluster, dbproxy, packet_table):
    direct = RawPg(pg_cluster.primary.host, pg_cluster.primary.port, pg_cluster.user, pg_cluster.password)
    try:
        expected = _sequence(direct)
    finally:
        direct.close()
    assert ("DataRow", b"42") in expected and ("ErrorResponse", "22012", "division by zero") in expected
    assert ("ErrorResponse", "25P02", "current transaction is aborted, commands ignored until end of transaction "
            "block") in expected  # fmt: skip
    proxied = RawPg(dbproxy.host, dbproxy.port, "app", "app-secret")
    try:
        assert _sequence(proxied) == expected
    finally:
        proxied.close()
