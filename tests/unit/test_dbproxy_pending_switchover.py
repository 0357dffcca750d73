"""A planned switchover Patroni was asked for, as the dbproxy reads it (topology.py, pure).

The key values are what Patroni 3.0.2 writes (patroni/dcs/__init__.py `manual_failover`: compact
JSON with `leader`, `member` and `scheduled_at` as `datetime.isoformat()`, `{}` once cleared);
/cluster's `scheduled_switchover` is patroni/utils.py `cluster_as_json`'s.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dbproxy.patroni_source import same_view
from proxy.dbproxy.topology import (
    PendingSwitchover,
    parse_cluster,
    parse_etcd,
    parse_failover_key,
    switchover_wait,
)

from .test_dbproxy_topology import CLUSTER, ETCD  # node2 leads in ETCD, node1 in CLUSTER

NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()


def with_failover(value: str | bytes) -> dict:
    return dict(ETCD, **{"/service/tp/failover": value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"leader":"node2","member":"node1"}', PendingSwitchover("node2", "node1")),  # patronictl switchover
        ('{"member":"node1"}', PendingSwitchover(None, "node1")),  # patronictl failover --candidate
        ('{"leader":"node2"}', PendingSwitchover("node2", None)),  # switchover, Patroni picks
        ('{"leader":"node2","member":"node1","scheduled_at":"2026-12-05T12:00:00+00:00"}',
         PendingSwitchover("node2", "node1", NOON)),
        ('{"leader":"node2","member":"node1","scheduled_at":"2026-12-05T13:00:00+01:00"}',
         PendingSwitchover("node2", "node1", NOON)),
        ("node2:node1", PendingSwitchover("node2", "node1")),  # the pre-JSON text form Patroni still reads
        (b"{}", None),  # cleared by Patroni after the switch (or when it refused)
        (b"", None),
        ("null", None),
        ('{"leader":"node2","member":"node1","scheduled_at":"not a time"}', None),  # Patroni drops it
        ('{"leader":"","member":""}', None),
        ('{"leader":7,"member":["x"]}', None),
    ],
)  # fmt: skip
def test_failover_key(value: str | bytes, expected: PendingSwitchover | None) -> None:
    assert parse_failover_key(value) == expected
    assert parse_etcd("tp", with_failover(value)).pending_switchover == expected


def test_no_failover_key_no_pending_switchover() -> None:
    assert parse_etcd("tp", ETCD).pending_switchover is None
    # Another scope's key is not ours.
    other = dict(ETCD, **{"/service/other/failover": '{"leader":"node2","member":"node1"}'})
    assert parse_etcd("tp", other).pending_switchover is None


def test_cluster_shows_only_scheduled_switchovers() -> None:
    body = dict(CLUSTER, scheduled_switchover={"at": "2026-12-05T12:00:00+00:00", "from": "node1", "to": "node2"})
    assert parse_cluster(json.dumps(body)).pending_switchover == PendingSwitchover("node1", "node2", NOON)
    assert parse_cluster(json.dumps(CLUSTER)).pending_switchover is None
    for bad in ({"at": "soon", "from": "node1"}, {"from": "node1"}, "x", {"at": "2026-12-05T12:00:00+00:00"}):
        assert parse_cluster(json.dumps(dict(CLUSTER, scheduled_switchover=bad))).pending_switchover is None


@pytest.mark.parametrize(
    ("value", "now", "wait"),
    [
        ('{"leader":"node2","member":"node1"}', NOON, 0.0),
        ('{"member":"node1"}', NOON, 0.0),
        ('{"leader":"node2"}', NOON, 0.0),
        ('{"leader":"node2","member":"node1","scheduled_at":"2026-12-05T12:00:00+00:00"}', NOON - 30, 30.0),
        ('{"leader":"node2","member":"node1","scheduled_at":"2026-12-05T12:00:00+00:00"}', NOON + 1, 0.0),
        ('{"leader":"node1","member":"node2"}', NOON, None),  # not the leader: Patroni refuses
        ('{"member":"node2"}', NOON, None),  # the leader itself as candidate
        ('{"leader":"node2","member":"node9"}', NOON, None),  # no such member
        ("{}", NOON, None),
    ],
)  # fmt: skip
def test_switchover_wait(value: str, now: float, wait: float | None) -> None:
    assert switchover_wait(parse_etcd("tp", with_failover(value)), now) == wait


def test_no_leader_no_switchover_to_wait_for() -> None:
    kvs = {k: v for k, v in with_failover('{"member":"node1"}').items() if not k.endswith("/leader")}
    assert switchover_wait(parse_etcd("tp", kvs), NOON) is None


def test_a_new_failover_key_is_a_new_view() -> None:
    # The sources hand on only changed views: the key's arrival and removal must count.
    before = parse_etcd("tp", ETCD, version=1)
    during = parse_etcd("tp", with_failover('{"leader":"node2","member":"node1"}'), version=2)
    after = parse_etcd("tp", with_failover("{}"), version=3)
    assert not same_view(before, during) and not same_view(during, after) and same_view(before, after)


def test_to_json() -> None:
    assert PendingSwitchover("node2", "node1", NOON).to_json() == {
        "leader": "node2", "candidate": "node1", "scheduled_at": "2026-12-05T12:00:00+00:00"}  # fmt: skip


@given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_failover_key_never_raises(value: str | bytes) -> None:
    result = parse_failover_key(value)
    assert result is None or isinstance(result, PendingSwitchover)
