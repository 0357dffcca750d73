"""Queue workers pause while a real dbproxy's /status says its primary is not usable, also when that
admin is beyond loopback (TLS, the token asked of reads)."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import urllib.request

import redis.asyncio as aioredis

from proxy.devstack.dbproxy import dbproxy_config
from proxy.devstack.poll import wait_until_async
from proxy.devstack.ports import allocate_port
from proxy.devstack.postgres import HOST
from proxy.devstack.process import ManagedProcess, python_child_env
from tests.integration import queueproc
from tests.integration.queueproc import Workers, write_config
from tests.integration.tlsutil import make_ca
from workers.queue import QueueClient

WAIT = 60.0

server = queueproc.server


async def test_worker_pauses_while_the_primary_is_down(tmp_path, server, pg_cluster_factory, dbproxy_factory) -> None:
    cluster = await asyncio.to_thread(pg_cluster_factory, 0)
    proxy = await asyncio.to_thread(dbproxy_factory, cluster)
    r = aioredis.from_url(server.url, decode_responses=True)
    tables = (f'[backpressure]\nstatus_url = "http://127.0.0.1:{proxy.admin_port}/status"\n'
              "interval = 0.2\n")
    w = Workers(tmp_path / "logs", write_config(tmp_path / "bp.toml", server.url, tables=tables), r)
    try:
        proc = await w.start("a")
        q = QueueClient(r)
        first = await q.enqueue("jobs", {})
        await wait_until_async(lambda: _len(r, "t:effects", 1), WAIT, "job run while healthy")
        cluster.primary.pause()  # SIGSTOP (postmaster and backends): the dbproxy's monitor times out
        try:
            await wait_until_async(lambda: _log_has(proc, "paused: primary"), WAIT, "worker paused")
            # A pause holds from the worker's next loop pass (a read already blocking may still
            # take a job): one pass (it stamps tq:workers each time), then the job, then two more.
            await _loop_pass(r)
            second = await q.enqueue("jobs", {})
            await _loop_pass(r)
            await _loop_pass(r)
            assert await r.lrange("t:starts", 0, -1) == [f"{first} a"]
            assert (await q.stats("jobs")).depth == 1
        finally:
            cluster.primary.resume()
        await wait_until_async(lambda: _log_has(proc, "resumed"), WAIT, "worker resumed")
        effects = await wait_until_async(lambda: _len(r, "t:effects", 2), WAIT, "job run after resume")
        assert [e.split()[0] for e in effects] == [first, second]
    finally:
        w.close()
        await r.aclose()


async def _len(r: aioredis.Redis, key: str, n: int) -> list[str] | None:
    items = await r.lrange(key, 0, -1)
    return items if len(items) >= n else None


async def _loop_pass(r: aioredis.Redis, name: str = "a") -> None:
    await wait_until_async(lambda: r.hget("tq:workers", name), WAIT, f"worker {name} registered")
    stamp = float(await r.hget("tq:workers", name))
    await wait_until_async(lambda: _stamp_after(r, stamp, name), WAIT, "a pass of the worker's loop")


async def _stamp_after(r: aioredis.Redis, stamp: float, name: str = "a") -> bool:
    return float(await r.hget("tq:workers", name)) > stamp


async def _log_has(proc, text: str) -> bool:
    return text in proc.log_tail(300)


async def test_worker_reads_a_tls_dbproxy_admin_with_its_token(tmp_path, server, pg_cluster_factory) -> None:
    """A dbproxy's admin beyond loopback is TLS and asks its token of reads (docs/dbproxy.md): the
    worker reads /status with [backpressure] token_file and cert_file (its pinned certificate), so
    a primary's outage still pauses it; without the token the status is unreachable to it."""
    cluster = await asyncio.to_thread(pg_cluster_factory, 0)
    ca = make_ca(tmp_path / "pki")
    cert = ca.issue("admin", ["dbproxy.internal"])
    (tmp_path / "token").write_text("queue-reads-this-token\n")
    port_lock, admin_lock = allocate_port(HOST), allocate_port("0.0.0.0")
    config = dbproxy_config(cluster, port=port_lock.port, admin_port=admin_lock.port, users={"app": "app-secret"})
    inline = f'admin = {{ address = "{HOST}:{admin_lock.port}" }}'
    assert inline in config
    config = config.replace(inline, f'admin = {{ address = "0.0.0.0:{admin_lock.port}", token_file = '
                            f'"{tmp_path / "token"}", tls = {{ cert_file = "{cert.cert}", key_file = "{cert.key}" }} }}')
    (tmp_path / "dbproxy.toml").write_text(config)
    port_lock.release()
    admin_lock.release()
    proxy = ManagedProcess([sys.executable, "-m", "proxy.cli", "dbproxy", "--config", str(tmp_path / "dbproxy.toml")],
                           name="dbproxy", log_dir=tmp_path, env=python_child_env())  # fmt: skip
    url = f"https://127.0.0.1:{admin_lock.port}/status"
    ctx = ssl.create_default_context(cafile=str(ca.cert))

    def ready() -> bool:
        req = urllib.request.Request(url, headers={"Authorization": "Bearer queue-reads-this-token"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return bool(json.loads(resp.read()).get("ready"))
        except OSError:
            return False

    r = aioredis.from_url(server.url, decode_responses=True)
    bp = f'[backpressure]\nstatus_url = "{url}"\ninterval = 0.2\npause_when_unreachable = true\n'
    with_token = bp + f'token_file = "{tmp_path / "token"}"\ncert_file = "{cert.cert}"\n'
    w = Workers(tmp_path / "logs", write_config(tmp_path / "bp.toml", server.url, tables=with_token), r)
    try:
        await asyncio.to_thread(proxy.wait_ready, ready, WAIT)
        blind = await w.start("blind", write_config(tmp_path / "blind.toml", server.url,
                                                    tables=bp + f'cert_file = "{cert.cert}"\n'))  # fmt: skip
        await wait_until_async(lambda: _log_has(blind, "paused: health status unreachable"), WAIT, "no token: paused")
        await blind.terminate_async(10)
        proc = await w.start("a")
        await _loop_pass(r, "a")
        await _loop_pass(r, "a")
        cluster.primary.pause()  # the status it reads through TLS with the token now says why to pause
        try:
            await wait_until_async(lambda: _log_has(proc, "paused: primary"), WAIT, "worker paused")
        finally:
            cluster.primary.resume()
        await wait_until_async(lambda: _log_has(proc, "resumed"), WAIT, "worker resumed")
        assert "unreachable" not in proc.log_tail(300)
    finally:
        w.close()
        proxy.terminate(10)
        await r.aclose()
