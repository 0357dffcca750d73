"""proxy/dbproxy/patroni_source.py against real etcd and Patroni: the sources see switchover and failover.

Each test records the views the sources hand out and polls them with a generous deadline; the
time from the action to the first view naming the new leader is logged (the figures issue 16's
bench will track), never asserted beyond the deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from proxy.dbproxy.patroni_source import EtcdWatchSource, PatroniRestSource
from proxy.dbproxy.topology import Topology, TopologyError, WriteVerdict, write_verdict
from proxy.devstack.patroni import (
    PatroniCluster,
    etcd_binary,
    patroni_binary,
    start_etcd,
    start_patroni_cluster,
)
from proxy.devstack.poll import wait_until_async
from proxy.devstack.ports import allocate_port

pytestmark = pytest.mark.skipif(
    etcd_binary() is None or patroni_binary() is None, reason="patroni and etcd-server are not installed"
)
log = logging.getLogger(__name__)
SEEN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def patroni(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PatroniCluster]:
    cluster = start_patroni_cluster(3, log_dir=tmp_path_factory.mktemp("patroni-source"), scope="src")
    try:
        yield cluster
    finally:
        cluster.close()


class Recorder:
    """Collects views and errors, with the monotonic time each view arrived."""

    def __init__(self) -> None:
        self.views: list[tuple[float, Topology]] = []
        self.errors: list[Exception] = []

    def __call__(self, topology: Topology) -> None:
        self.views.append((time.monotonic(), topology))

    def error(self, exc: Exception) -> None:
        self.errors.append(exc)

    def first_with_leader(self, name: str, after: float) -> float | None:
        for at, view in self.views:
            if at >= after and view.leader == name:
                return at
        return None

    async def wait_leader(self, name: str, after: float, what: str) -> float:
        async def seen() -> float | None:
            return self.first_with_leader(name, after)

        return await wait_until_async(seen, SEEN_TIMEOUT, f"{what} reports leader {name}")


@pytest.fixture
async def sources(patroni: PatroniCluster) -> AsyncIterator[tuple[Recorder, Recorder]]:
    """Both sources running against the cluster: (REST recorder, etcd recorder)."""
    rest, etcd = Recorder(), Recorder()
    assert patroni.etcd is not None
    tasks = [
        asyncio.create_task(PatroniRestSource([n.api_url for n in patroni.nodes], rest, on_error=rest.error,
                                              interval=0.2).run()),
        asyncio.create_task(EtcdWatchSource([patroni.etcd.url], patroni.scope, etcd, on_error=etcd.error).run()),
    ]  # fmt: skip
    try:
        yield rest, etcd
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_sources_report_the_leader_replicas_and_lag(
    patroni: PatroniCluster, sources: tuple[Recorder, Recorder]
) -> None:
    leader = await asyncio.to_thread(patroni.wait_leader)
    rest, etcd = sources
    for recorder, what in ((rest, "REST"), (etcd, "etcd")):
        await recorder.wait_leader(leader, 0.0, what)
        view = recorder.views[-1][1]
        assert view.leader_member is not None
        assert view.leader_member.address == ("127.0.0.1", patroni.node(leader).port)
        assert {m.name for m in view.replicas} == {n.name for n in patroni.nodes} - {leader}
        assert all(m.port == patroni.node(m.name).port for m in view.members)
    assert etcd.views[-1][1].version > 0  # etcd's revision


async def test_switchover_is_seen_by_both_sources(patroni: PatroniCluster, sources: tuple[Recorder, Recorder]) -> None:
    rest, etcd = sources
    old = await asyncio.to_thread(patroni.wait_leader)
    await rest.wait_leader(old, 0.0, "REST")
    await etcd.wait_leader(old, 0.0, "etcd")
    target = patroni.replicas()[0].name
    started = time.monotonic()
    await asyncio.to_thread(patroni.switchover, target)
    confirmed = time.monotonic()
    seen_rest = await rest.wait_leader(target, started, "REST")
    seen_etcd = await etcd.wait_leader(target, started, "etcd")
    log.warning("switchover %s -> %s: Patroni confirmed after %.2fs; REST source saw it after %.2fs, "
                "etcd watch after %.2fs", old, target, confirmed - started, seen_rest - started,
                seen_etcd - started)  # fmt: skip
    await asyncio.to_thread(patroni.wait_healthy, 60)


async def test_postmaster_kill_failover_is_seen_by_both_sources(
    patroni: PatroniCluster, sources: tuple[Recorder, Recorder]
) -> None:
    rest, etcd = sources
    old = await asyncio.to_thread(patroni.wait_leader)
    await rest.wait_leader(old, 0.0, "REST")
    await etcd.wait_leader(old, 0.0, "etcd")
    started = time.monotonic()
    assert patroni.node(old).kill_postmaster() is not None
    new = await asyncio.to_thread(patroni.wait_leader, 60, not_name=old)
    confirmed = time.monotonic()
    seen_rest = await rest.wait_leader(new, started, "REST")
    seen_etcd = await etcd.wait_leader(new, started, "etcd")
    log.warning("failover (postmaster SIGKILL) %s -> %s: writable after %.2fs; REST source saw it after %.2fs, "
                "etcd watch after %.2fs", old, new, confirmed - started, seen_rest - started,
                seen_etcd - started)  # fmt: skip
    # The new leader's view is on a newer timeline than the old one's.
    old_view = next(v for _, v in reversed(etcd.views) if v.leader == old)
    new_view = next(v for _, v in etcd.views if v.leader == new)
    assert (new_view.leader_timeline or 0) > (old_view.leader_timeline or 0)
    await asyncio.to_thread(patroni.wait_healthy, 60)


async def test_node_death_failover_shows_a_leaderless_view_then_the_new_leader(
    patroni: PatroniCluster, sources: tuple[Recorder, Recorder]
) -> None:
    # Patroni and postgres die together: nobody deletes the leader key; it expires after the ttl.
    rest, etcd = sources
    old = await asyncio.to_thread(patroni.wait_leader)
    await etcd.wait_leader(old, 0.0, "etcd")
    started = time.monotonic()
    _, new = await asyncio.to_thread(patroni.kill_leader_node, 60)
    confirmed = time.monotonic()
    seen_rest = await rest.wait_leader(new, started, "REST")
    seen_etcd = await etcd.wait_leader(new, started, "etcd")
    gone = next(at for at, view in etcd.views if at >= started and view.leader is None)
    log.warning("failover (node SIGKILL) %s -> %s: leader key gone after %.2fs, writable after %.2fs; "
                "REST source saw it after %.2fs, etcd watch after %.2fs", old, new, gone - started,
                confirmed - started, seen_rest - started, seen_etcd - started)  # fmt: skip
    assert gone <= seen_etcd
    await asyncio.to_thread(patroni.restart_node, old, 90)


async def test_rest_source_skips_a_dead_endpoint(patroni: PatroniCluster) -> None:
    with allocate_port() as dead:  # locked and bound by nobody: connection refused
        recorder = Recorder()
        source = PatroniRestSource([f"http://127.0.0.1:{dead.port}", patroni.nodes[0].api_url], recorder)
        async with aiohttp.ClientSession() as session:
            view = await source.fetch_once(session)
            assert view.leader == await asyncio.to_thread(patroni.wait_leader)
            # It sticks to the endpoint that answered: the dead one is not tried again.
            assert source.endpoints[source._current] == patroni.nodes[0].api_url


async def _etcd_put(session: aiohttp.ClientSession, url: str, key: str, value: str) -> None:
    body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()}
    async with session.post(f"{url}/v3/kv/put", json=body) as response:
        assert response.status == 200, await response.text()


async def _etcd_delete(session: aiohttp.ClientSession, url: str, key: str) -> None:
    async with session.post(f"{url}/v3/kv/deleterange", json={"key": base64.b64encode(key.encode()).decode()}) as r:
        assert r.status == 200, await r.text()


async def test_etcd_watch_follows_puts_and_deletes_and_survives_garbage(patroni: PatroniCluster) -> None:
    # A scope of our own, written by hand into the real etcd: the watch sees each change as it happens.
    assert patroni.etcd is not None
    url, recorder = patroni.etcd.url, Recorder()
    member = {"conn_url": "postgres://127.0.0.1:5999/postgres", "state": "running", "xlog_location": 10, "timeline": 1}
    task = asyncio.create_task(EtcdWatchSource([url], "handmade", recorder, on_error=recorder.error).run())
    try:
        async with aiohttp.ClientSession() as session:
            await _etcd_put(session, url, "/service/handmade/members/m1", json.dumps(member))
            await _etcd_put(session, url, "/service/handmade/leader", "m1")
            await recorder.wait_leader("m1", 0.0, "etcd watch")
            # Patroni's leader key expires with its lease: a DELETE event, no leader.
            await _etcd_delete(session, url, "/service/handmade/leader")

            async def leaderless() -> bool:
                return recorder.views[-1][1].leader is None

            await wait_until_async(leaderless, SEEN_TIMEOUT, "a view without a leader")
            views = len(recorder.views)
            await _etcd_put(session, url, "/service/handmade/members/m2", "{not json")

            async def error_seen() -> bool:
                return any(isinstance(e, TopologyError) for e in recorder.errors)

            await wait_until_async(error_seen, SEEN_TIMEOUT, "a TopologyError for the garbage member")
            assert len(recorder.views) == views  # garbage produced no view
            await _etcd_put(session, url, "/service/handmade/members/m2", json.dumps(member))
            await _etcd_put(session, url, "/service/handmade/leader", "m2")
            await recorder.wait_leader("m2", 0.0, "etcd watch after garbage")
            for key in ("leader", "members/m1", "members/m2"):
                await _etcd_delete(session, url, f"/service/handmade/{key}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_synchronous_mode_is_seen_by_the_etcd_watch(
    patroni: PatroniCluster, sources: tuple[Recorder, Recorder]
) -> None:
    _, etcd = sources
    await asyncio.to_thread(patroni.set_synchronous_mode, True)
    try:
        sync = {m["name"] for m in patroni.cluster()["members"] if m["role"] == "sync_standby"}
        assert len(sync) == 1

        async def seen() -> bool:
            view = etcd.views[-1][1] if etcd.views else None
            return view is not None and view.synchronous_mode is True and view.sync_standbys == sync

        await wait_until_async(seen, SEEN_TIMEOUT, f"etcd view with synchronous_mode on and sync standby {sync}")
    finally:
        await asyncio.to_thread(patroni.set_synchronous_mode, False)


async def test_etcd_gone_keeps_the_last_view(tmp_path: Path) -> None:
    # No false failover from the source: etcd dying yields errors, never a leaderless view.
    etcd, recorder = start_etcd(tmp_path), Recorder()
    task = asyncio.create_task(EtcdWatchSource([etcd.url], "alone", recorder, on_error=recorder.error).run())
    try:
        member = {"conn_url": "postgres://127.0.0.1:5999/postgres", "state": "running", "timeline": 1}
        async with aiohttp.ClientSession() as session:
            await _etcd_put(session, etcd.url, "/service/alone/members/m1", json.dumps(member))
            await _etcd_put(session, etcd.url, "/service/alone/leader", "m1")
        await recorder.wait_leader("m1", 0.0, "etcd watch")
        views = len(recorder.views)
        await asyncio.to_thread(etcd.close)

        async def errors_seen() -> bool:
            return len(recorder.errors) >= 2  # the broken stream, then a failed reconnect

        await wait_until_async(errors_seen, SEEN_TIMEOUT, "errors after etcd stopped")
        assert len(recorder.views) == views
        assert recorder.views[-1][1].leader == "m1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        etcd.close()


async def test_write_fence_against_the_servers_own_answers(patroni: PatroniCluster) -> None:
    # The fence's inputs asked of each real server: only the leader passes; replicas, which
    # are in recovery and not named leader, never do.
    await asyncio.to_thread(patroni.wait_healthy, 60)
    source = PatroniRestSource([n.api_url for n in patroni.nodes], Recorder())
    verdicts: dict[str, WriteVerdict] = {}

    async def all_decided() -> bool:
        async with aiohttp.ClientSession() as session:
            view = await source.fetch_once(session)
        for node in patroni.nodes:
            conn = await asyncpg.connect(node.dsn(), timeout=5)
            try:
                row = await conn.fetchrow(
                    "select pg_is_in_recovery() as r, (select timeline_id from pg_control_checkpoint()) as tl"
                )
            finally:
                await conn.close()
            verdicts[node.name] = write_verdict(view, "127.0.0.1", node.port, in_recovery=row["r"], timeline=row["tl"])
        # The leader's checkpoint shows its new timeline shortly after a promotion: poll for it.
        return list(verdicts.values()).count(WriteVerdict.OK) == 1

    await wait_until_async(all_decided, SEEN_TIMEOUT, "exactly one server passes the write fence")
    leader = await asyncio.to_thread(patroni.wait_leader)
    assert verdicts[leader] is WriteVerdict.OK
    assert all(v is WriteVerdict.NOT_LEADER for name, v in verdicts.items() if name != leader)
