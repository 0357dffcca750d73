"""Very large client messages through `tierproxy dbproxy`: memory, other clients' latency, limit.

A 200 MiB statement (asyncpg's execute(): a simple Query) runs through the proxy while another
client (psycopg, in a process of its own) loops small queries: the proxy's RSS is sampled during the transfer and its
peak must stay within twice the message above the baseline, and the small queries' worst latency
is recorded (a generous bound only: the machine is shared). A statement over `max_message_bytes`
gets FATAL 54000 (asyncpg reads it as ProgramLimitExceededError) and the proxy serves on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import asyncpg
import psycopg
import pytest

from tests.integration.rss import RssSampler

MIB = 1 << 20
BIG = 200 * MIB


# The other client runs in a process of its own, so what it measures is the proxy's stall, not
# this process's event loop busy sending 200 MiB. It reads until its stdin closes, then prints
# each query's (start, end) on the shared monotonic clock.
_OTHER_CLIENT = r"""
import json, select, sys, time
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
print("ready", flush=True)
spans = []
while not select.select([sys.stdin], [], [], 0)[0]:
    started = time.monotonic()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    spans.append((started, time.monotonic()))
print(json.dumps(spans), flush=True)
"""


async def test_a_200_mib_statement_takes_bounded_memory_and_does_not_stall_others(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster)
    sql = "SELECT length('" + "x" * BIG + "')"
    big = await asyncpg.connect(proxy.dsn())
    try:
        # warm up both connections' paths before the baseline is taken
        assert await big.execute("SELECT length('abc')") == "SELECT 1"
        other = subprocess.Popen([sys.executable, "-c", _OTHER_CLIENT, proxy.dsn()], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert await asyncio.to_thread(other.stdout.readline) == "ready\n"
            with RssSampler(proxy.process.pid) as rss:
                started = time.monotonic()
                assert await big.execute(sql, timeout=300) == "SELECT 1"
                finished = time.monotonic()
            other.stdin.close()
            spans = json.loads(await asyncio.to_thread(other.stdout.readline))
        finally:
            if other.poll() is None:
                other.kill()  # after its answer it is exiting anyway; on a failure, at once
            other.wait(30)
        took = finished - started
        during = [b - a for a, b in spans if b >= started and a <= finished]
        worst = max(during) if during else took
        print(f"200 MiB statement: {took:.2f} s; proxy RSS {rss.before // 1024} MiB -> peak "
              f"{rss.peak // 1024} MiB (+{rss.growth // 1024} MiB, {rss.samples} samples); "
              f"other client: {len(during)} queries meanwhile, worst {worst * 1000:.0f} ms")
        assert rss.growth < 2 * BIG // 1024, f"proxy RSS grew {rss.growth // 1024} MiB for a 200 MiB message"
        assert during, "the other client made no progress during the transfer"
        assert worst < 3.0, f"another client's query waited {worst:.2f} s"
        # the same session goes on
        assert await big.fetchval("SELECT 2") == 2
    finally:
        await big.close()


async def test_large_simple_query_and_parse_above_the_classifier_limit_run_on_the_primary(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster)
    text = "y" * (3 * MIB)
    conn = await asyncpg.connect(proxy.dsn())
    try:
        # execute() without arguments is a simple Query; fetchval() a Parse/Bind/Execute
        assert await conn.execute(f"SELECT length('{text}')") == "SELECT 1"
        assert await conn.fetchval(f"SELECT length('{text}'), inet_server_port()") == 3 * MIB
        assert await conn.fetchval(f"SELECT inet_server_port() WHERE length('{text}') > 0") == pg_cluster.primary.port
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


def test_a_message_over_max_message_bytes_gets_54000_and_the_proxy_serves_on(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, head="max_message_bytes = 8388608")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="exceeds the limit"):
            conn.execute("SELECT '" + "z" * (10 * MIB) + "'")
    with psycopg.connect(proxy.dsn(), autocommit=True) as other:
        assert other.execute("SELECT length(%s::text)", ("z" * (7 * MIB),)).fetchone() == (7 * MIB,)
