"""proxy/dbproxy/topology.py: parsing Patroni's /cluster and etcd keys, diff, and the write fence.

The /cluster and etcd samples are copied from a real Patroni 3.0.2 cluster (proxy/devstack/patroni.py).
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.topology import (
    Topology,
    TopologyError,
    WriteVerdict,
    diff,
    parse_cluster,
    parse_etcd,
    write_verdict,
)
from tests.unit.patroni_samples import CLUSTER


def with_roles(**roles: str) -> dict:
    body = json.loads(json.dumps(CLUSTER))
    for member in body["members"]:
        if member["name"] in roles:
            member["role"] = roles[member["name"]]
    return body


def test_parse_cluster_reads_leader_replicas_lag_timeline_and_sync() -> None:
    t = parse_cluster(json.dumps(CLUSTER), version=7)
    assert t.leader == "node1"
    assert t.leader_member is not None and t.leader_member.address == ("127.0.0.1", 25509)
    assert t.leader_timeline == 3
    assert [(m.name, m.lag, m.timeline) for m in t.replicas] == [("node2", 0, 3), ("node3", 4096, 3)]
    assert t.sync_standbys == frozenset({"node3"})
    assert t.version == 7
    assert [m.name for m in t.healthy_replicas(max_lag=1000)] == ["node2"]


def test_parse_cluster_bytes_and_unknown_lag() -> None:
    body = json.loads(json.dumps(CLUSTER))
    body["members"][1]["lag"] = "unknown"
    t = parse_cluster(json.dumps(body).encode())
    assert t.by_name["node2"].lag is None
    assert [m.name for m in t.healthy_replicas()] == ["node3"]


def test_no_running_leader_means_no_leader() -> None:
    body = json.loads(json.dumps(CLUSTER))
    body["members"][0]["state"] = "stopped"
    assert parse_cluster(body).leader is None
    body = with_roles(node1="replica")
    assert parse_cluster(body).leader is None


@pytest.mark.parametrize(
    "body, message",
    [
        ("{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[]", "'members' list"),
        ('{"members": [1]}', "expected an object"),
        ('{"members": [{"role": "leader"}]}', "non-empty name"),
        ('{"members": [{"name": "a", "role": "boss"}]}', "unknown role"),
        ('{"members": [{"name": "a", "role": "replica", "port": 70000}]}', "out of range"),
        ('{"members": [{"name": "a", "role": "replica", "port": "5432"}]}', "expected an integer"),
        ('{"members": [{"name": "a", "role": "replica"}, {"name": "a", "role": "replica"}]}', "duplicate"),
    ],
)
def test_parse_cluster_rejects_garbage_with_a_clear_message(body: str | bytes, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_cluster(body)


def test_two_running_leaders_are_refused() -> None:
    with pytest.raises(TopologyError, match="more than one running leader"):
        parse_cluster(with_roles(node2="leader"))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
MEMBERISH = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=4), st.integers(), st.none()),
        "role": st.sampled_from(["leader", "replica", "sync_standby", "standby_leader", "x", 1]),
        "state": st.sampled_from(["running", "streaming", "stopped", None, 3]),
        "host": st.one_of(st.just("127.0.0.1"), st.integers(), st.none()),
        "port": st.one_of(st.integers(-5, 70000), st.text(max_size=3), st.booleans()),
        "timeline": st.one_of(st.integers(), st.text(max_size=2), st.none()),
        "lag": st.one_of(st.integers(), st.just("unknown"), st.floats(allow_nan=False)),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"members": st.lists(MEMBERISH, max_size=4)})), st.booleans())
def test_parse_cluster_never_raises_a_foreign_exception(body: object, as_text: bool) -> None:
    data = json.dumps(body) if as_text else body
    try:
        t = parse_cluster(data)
    except TopologyError:
        return
    assert isinstance(t, Topology)
    # A view we accept names at most one leader, and that leader is among its members.
    assert t.leader is None or t.leader in t.by_name


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_parse_cluster_on_random_bytes(raw: bytes) -> None:
    try:
        parse_cluster(raw)
    except TopologyError:
        pass


# -- etcd -----------------------------------------------------------------------------------

ETCD = {
    "/service/tp/leader": b"node2",
    "/service/tp/members/node1": json.dumps({"conn_url": "postgres://127.0.0.1:25509/postgres",
        "api_url": "http://127.0.0.1:22007/patroni", "state": "running", "role": "replica",
        "version": "3.0.2", "xlog_location": 1000, "timeline": 2}),
    "/service/tp/members/node2": json.dumps({"conn_url": "postgres://127.0.0.1:30797/postgres",
        "api_url": "http://127.0.0.1:25137/patroni", "state": "running", "role": "master",
        "version": "3.0.2", "xlog_location": 5000, "timeline": 2}),
    "/service/tp/sync": json.dumps({"leader": "node2", "sync_standby": "node1"}),
    "/service/tp/config": json.dumps({"ttl": 10, "synchronous_mode": True}),
    "/service/tp/initialize": "7405123",
    "/service/other/leader": b"zzz",
}  # fmt: skip


def test_parse_etcd_reads_leader_members_lag_and_sync() -> None:
    t = parse_etcd("tp", ETCD, version=42)
    assert t.leader == "node2"
    assert t.leader_member is not None and t.leader_member.address == ("127.0.0.1", 30797)
    assert t.by_name["node1"].lag == 4000
    assert t.by_name["node1"].role == "sync_standby"
    assert t.sync_standbys == frozenset({"node1"})
    assert t.synchronous_mode is True
    assert t.version == 42


def test_etcd_sync_key_of_an_older_leader_vouches_for_nobody() -> None:
    kvs = dict(ETCD, **{"/service/tp/sync": json.dumps({"leader": "node1", "sync_standby": "node2"})})
    assert parse_etcd("tp", kvs).sync_standbys == frozenset()


def test_etcd_without_leader_key_has_no_leader() -> None:
    kvs = {k: v for k, v in ETCD.items() if not k.endswith("/leader")}
    t = parse_etcd("tp", kvs)
    assert t.leader is None
    assert diff(parse_etcd("tp", ETCD), t).leader_gone


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("/service/tp/members/node1", "{oops", "not JSON"),
        ("/service/tp/members/node1", "[1]", "expected an object"),
        ("/service/tp/members/node1", '{"conn_url": 5}', "expected a string"),
        ("/service/tp/members/node1", '{"conn_url": "postgres://h:99999/x"}', "bad URL"),
        ("/service/tp/leader", b"\xff", "not UTF-8"),
        ("/service/tp/sync", "3", "expected an object"),
    ],
)
def test_parse_etcd_rejects_garbage(key: str, value: str | bytes, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_etcd("tp", dict(ETCD, **{key: value}))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["/service/tp/leader", "/service/tp/sync", "/service/tp/config", "/service/tp/members/a",
                     "/service/tp/members/b", "/service/tp/members/", "x"]),
    st.one_of(st.binary(max_size=12), JSON.map(json.dumps), st.text(max_size=6)),
    max_size=6,
))  # fmt: skip
def test_parse_etcd_never_raises_a_foreign_exception(kvs: dict[str, str | bytes]) -> None:
    try:
        t = parse_etcd("tp", kvs)
    except TopologyError:
        return
    assert t.leader is None or t.leader in t.by_name


def test_etcd_key_encoding_roundtrip_matches_the_gateway() -> None:
    # The v3 gateway hands keys and values as base64; the source decodes before parse_etcd.
    raw = base64.b64encode(b"/service/tp/leader").decode()
    assert base64.b64decode(raw).decode() == "/service/tp/leader"


# -- decisions ------------------------------------------------------------------------------


def test_diff_switchover_and_replica_changes() -> None:
    old = parse_cluster(CLUSTER)
    body = with_roles(node1="replica", node2="leader")
    body["members"][0]["lag"] = 0
    change = diff(old, parse_cluster(body))
    assert (change.old_leader, change.new_leader) == ("node1", "node2")
    assert change.leader_changed and change.leader_confirmed and not change.leader_gone
    # node1 came back as a replica (lag 0 in the sample), node2 left the replicas.
    assert change.added == ("node1",) and change.removed == ("node2",)
    assert diff(old, parse_cluster(CLUSTER)).nothing
    assert diff(None, old).leader_confirmed


def test_diff_leader_gone_holds_writes() -> None:
    old = parse_cluster(CLUSTER)
    body = json.loads(json.dumps(CLUSTER))
    del body["members"][0]
    change = diff(old, parse_cluster(body))
    assert change.leader_gone and change.leader_changed and not change.leader_confirmed


def test_diff_leader_moved_address() -> None:
    body = json.loads(json.dumps(CLUSTER))
    body["members"][0]["port"] = 5433
    change = diff(parse_cluster(CLUSTER), parse_cluster(body))
    assert change.leader_changed and change.new_leader == "node1"


def test_write_fence() -> None:
    t = parse_cluster(CLUSTER)
    leader = ("127.0.0.1", 25509)
    old_primary = ("127.0.0.1", 30797)
    assert write_verdict(t, *leader, in_recovery=False, timeline=3) is WriteVerdict.OK
    # A stale primary: not in recovery (it still accepts writes) but Patroni names someone else.
    assert write_verdict(t, *old_primary, in_recovery=False, timeline=2) is WriteVerdict.NOT_LEADER
    assert write_verdict(t, *leader, in_recovery=True, timeline=3) is WriteVerdict.IN_RECOVERY
    assert write_verdict(t, *leader, in_recovery=False, timeline=2) is WriteVerdict.WRONG_TIMELINE
    assert write_verdict(t, *leader, in_recovery=False, timeline=None) is WriteVerdict.WRONG_TIMELINE
    no_leader = parse_cluster(with_roles(node1="replica"))
    assert write_verdict(no_leader, *leader, in_recovery=False, timeline=3) is WriteVerdict.NO_LEADER
    assert not WriteVerdict.NOT_LEADER.allowed and WriteVerdict.OK.allowed
