"""The follower pauses writes for a switchover Patroni announces (failover.py `_check_planned`).

In process: a PatroniFollower fed etcd views (topology.py parses them; nothing is started, no
server is reached: the leader is taken as confirmed, as after its fence check), its write gate
observed. The real thing, patronictl under load, is tests/integration/test_dbproxy_patroni_ops.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from proxy.dbproxy.config import TopologyConfig
from proxy.dbproxy.failover import PatroniFollower
from proxy.dbproxy.topology import parse_etcd

from .test_dbproxy_topology import ETCD  # node2 leads, at 127.0.0.1:30797; node1 replicates

NOW_KEY = '{"leader":"node2","member":"node1"}'


def follower(hold: float = 30.0) -> PatroniFollower:
    cfg = TopologyConfig(source="patroni", etcd_urls=["http://127.0.0.1:2379"], scope="tp",
                         failover_hold_timeout=hold)  # fmt: skip
    f = PatroniFollower(cfg, login=lambda: ("u", None), connect_timeout=1.0,
                        repoint=lambda primary, replicas: None, fence_old=lambda address: None)  # fmt: skip
    f.confirmed, f.confirmed_name = ("127.0.0.1", 30797), "node2"
    f.gate.open()
    f._on_topology(parse_etcd("tp", ETCD, version=1))
    return f


def view(f: PatroniFollower, failover: str | None, version: int) -> None:
    kvs = dict(ETCD) if failover is None else dict(ETCD, **{"/service/tp/failover": failover})
    f._on_topology(parse_etcd("tp", kvs, version=version))


async def until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_switchover_of_the_leader_pauses_writes_until_the_key_goes() -> None:
    f = follower()
    assert f.gate.is_open
    view(f, NOW_KEY, 2)
    await until(lambda: not f.gate.is_open)
    assert f.planned_quiesces == 1 and "node2 to node1" in f.gate.reason
    assert f.status()["pending_switchover"] == {"leader": "node2", "candidate": "node1", "scheduled_at": None}
    view(f, NOW_KEY, 3)  # the same key again (another view): no second pause
    assert f.planned_quiesces == 1
    view(f, "{}", 4)  # Patroni dropped it, node2 still leads: writes go on
    assert f.gate.is_open and f.planned is None
    await f.stop()


async def test_a_switchover_patroni_will_refuse_pauses_nothing() -> None:
    f = follower()
    for version, key in enumerate(['{"leader":"node1","member":"node2"}', '{"member":"node2"}',
                                   '{"leader":"node2","member":"node9"}'], start=2):  # fmt: skip
        view(f, key, version)
        await asyncio.sleep(0.05)
        assert f.gate.is_open and f.planned_quiesces == 0, key
    await f.stop()


async def test_a_scheduled_switchover_pauses_at_its_time() -> None:
    f = follower()
    at = time.time() + 0.5
    when = datetime.fromtimestamp(at, UTC).isoformat()
    view(f, json.dumps({"leader": "node2", "member": "node1", "scheduled_at": when}), 2)
    await asyncio.sleep(0.1)
    assert f.gate.is_open and f.planned_quiesces == 0  # not before its time
    await until(lambda: not f.gate.is_open)
    assert time.time() >= at and f.planned_quiesces == 1
    await f.stop()


async def test_the_pause_is_bounded_by_the_hold_timeout() -> None:
    f = follower(hold=0.3)
    view(f, NOW_KEY, 2)
    await until(lambda: not f.gate.is_open)
    await until(lambda: f.gate.is_open)  # no switch came: resumed although the key is still there
    view(f, NOW_KEY, 3)
    assert f.gate.is_open and f.planned_quiesces == 1  # and not paused again for the same key
    await f.stop()
