"""geodns policies (pure): geo with fallback, weighted splits stable per client network, failover,
geo then weights inside a region, fail open; and the region table (CIDR, MaxMind .mmdb)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from proxy.geodns.config import NameConfig
from proxy.geodns.policy import decide
from proxy.geodns.regions import RegionTable
from tests.unit.mmdb_writer import write_mmdb

ALL = {"east", "west", "central"}


def net(i: int) -> bytes:
    """The i-th distinct /24 client network, as the engine encodes networks."""
    return bytes((1, 24)) + ((int(ipaddress.IPv4Address("10.0.0.0")) + (i << 8)) % 2**32).to_bytes(4, "big")


def weighted(**w: int) -> NameConfig:
    return NameConfig(name="x", policy="weighted", weights=w)


def test_weighted_split_over_10000_networks_within_2_points():
    pol = weighted(east=70, west=30)
    got = [decide(pol, None, net(i), ALL).datacenters for i in range(10000)]
    east = sum(d == ("east",) for d in got) / len(got) * 100
    assert abs(east - 70) <= 2, east
    assert all(d in (("east",), ("west",)) for d in got)


def test_three_way_split_within_2_points():
    pol = weighted(east=50, west=30, central=20)
    got = [decide(pol, None, net(i), ALL).datacenters[0] for i in range(10000)]
    for dc, share in (("east", 50), ("west", 30), ("central", 20)):
        assert abs(got.count(dc) / 100 - share) <= 2, (dc, got.count(dc))


@given(st.integers(0, 2**24 - 1))
def test_one_network_always_gets_the_same_answer(i):
    pol = weighted(east=70, west=30)
    first = decide(pol, None, net(i), ALL)
    assert first.per_client
    for _ in range(3):
        assert decide(pol, None, net(i), ALL) == first


def test_losing_a_dc_moves_only_its_own_clients():
    pol = weighted(east=50, west=30, central=20)
    before = [decide(pol, None, net(i), ALL).datacenters[0] for i in range(3000)]
    after = [decide(pol, None, net(i), {"east", "west"}).datacenters[0] for i in range(3000)]
    for b, a in zip(before, after):
        if b != "central":
            assert a == b
        else:
            assert a in ("east", "west")


def test_failover_takes_first_available():
    pol = NameConfig(name="x", policy="failover", datacenters=["east", "west", "central"])
    assert decide(pol, None, net(1), ALL).datacenters == ("east",)
    assert decide(pol, None, net(1), {"west", "central"}).datacenters == ("west",)
    assert decide(pol, None, net(1), {"central"}).datacenters == ("central",)


def test_geo_region_then_fallback_then_default():
    pol = NameConfig(name="x", policy="geo", datacenters=["central"],
                     regions={"eu": {"datacenters": ["west", "east"]}, "us": {"datacenters": ["east"]}})
    assert decide(pol, "eu", net(1), ALL).datacenters == ("west",)
    assert decide(pol, "eu", net(1), {"east", "central"}).datacenters == ("east",)
    assert decide(pol, "us", net(1), ALL).datacenters == ("east",)
    # the region's list exhausted: the name's default order
    assert decide(pol, "us", net(1), {"central"}).datacenters == ("central",)
    # no rule for the region
    assert decide(pol, "asia", net(1), ALL).datacenters == ("central",)
    assert decide(pol, None, net(1), ALL).datacenters == ("central",)


def test_geo_then_weights_inside_a_region():
    pol = NameConfig(name="x", policy="geo", datacenters=["central"], regions={
        "us": {"weights": {"east": 80, "west": 20}, "datacenters": ["central"]},
        "eu": {"datacenters": ["central"]}})  # fmt: skip
    got = [decide(pol, "us", net(i), ALL).datacenters[0] for i in range(10000)]
    assert abs(got.count("east") / 100 - 80) <= 2
    assert got.count("central") == 0
    assert {decide(pol, "eu", net(i), ALL).datacenters[0] for i in range(100)} == {"central"}
    # both weighted DCs down: the region's fallback order
    assert decide(pol, "us", net(1), {"central"}).datacenters == ("central",)


def test_fail_open_and_closed():
    pol = NameConfig(name="x", policy="failover", datacenters=["east", "west"])
    d = decide(pol, None, net(1), set(), fail_open=True)
    assert d.datacenters == ("east", "west") and "fail open" in d.reason
    assert decide(pol, None, net(1), set(), fail_open=False).datacenters == ()


def _v4(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_region_table_longest_prefix_and_scope():
    t = RegionTable({"10.0.0.0/8": "wide", "10.1.0.0/16": "east", "10.1.2.0/24": "narrow",
                     "2001:db8::/32": "v6"}, default="dflt")  # fmt: skip
    assert t.lookup(1, _v4("10.1.2.3"), 32) == ("narrow", 24)
    assert t.lookup(1, _v4("10.1.3.3"), 32) == ("east", 16)
    assert t.lookup(1, _v4("10.9.3.3"), 24) == ("wide", 8)
    assert t.lookup(1, _v4("192.0.2.1"), 24) == ("dflt", 24)
    assert t.lookup(2, int(ipaddress.IPv6Address("2001:db8::1")), 56) == ("v6", 32)


def test_region_table_from_mmdb(tmp_path: Path):
    db = tmp_path / "geo.mmdb"
    write_mmdb(db, {"10.9.0.0/16": {"continent": {"code": "EU"}}, "10.8.8.0/24": {"continent": {"code": "NA"}}})
    t = RegionTable({"10.9.9.0/24": "override"}, mmdb=str(db), mmdb_field="continent.code",
                    mmdb_regions={"EU": "west"}, default="dflt")  # fmt: skip
    assert t.lookup(1, _v4("10.9.3.4"), 32) == ("west", 16)  # mapped through mmdb_regions
    assert t.lookup(1, _v4("10.8.8.1"), 32) == ("NA", 24)  # unmapped: the field's value
    assert t.lookup(1, _v4("10.9.9.1"), 32) == ("override", 24)  # the CIDR table wins
    assert t.lookup(1, _v4("10.8.8.1"), 16) == ("NA", 16)  # scope never above what the client said
    assert t.lookup(1, _v4("192.0.2.1"), 24) == ("dflt", 24)
    assert "MaxMind" in t.describe(1, _v4("10.9.3.4"), 32)
    t.close()


def test_engine_with_mmdb_config_answers_by_database(tmp_path: Path):
    import dns.edns
    import dns.message

    from proxy.core.config import parse_config
    from proxy.geodns.config import GeoDnsConfig
    from proxy.geodns.handler import Engine

    db = tmp_path / "geo.mmdb"
    write_mmdb(db, {"10.9.0.0/16": {"continent": {"code": "EU"}}})
    cfg = parse_config({
        "regions": {"mmdb": str(db), "mmdb_field": "continent.code", "mmdb_regions": {"EU": "west"},
                    "default": "east"},
        "datacenters": {"east": {"addresses": ["192.0.2.10"]}, "west": {"addresses": ["198.51.100.10"]}},
        "zones": [{"origin": "example.test.", "soa": {"mname": "ns1.example.test.", "rname": "h.example.test."},
                   "ns": ["ns1.example.test."],
                   "names": [{"name": "app", "policy": "geo", "datacenters": ["east"],
                              "regions": {"west": {"datacenters": ["west"]}}}]}],
    }, GeoDnsConfig)  # fmt: skip
    engine = Engine(cfg)
    q = dns.message.make_query("app.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.9.4.0", 24)])
    r = dns.message.from_wire(engine.handle(q.to_wire(), "127.0.0.1", False))
    assert [x.address for x in r.answer[0]] == ["198.51.100.10"]
    assert r.options[0].scopelen == 16
    r = dns.message.from_wire(engine.handle(dns.message.make_query("app.example.test", "A").to_wire(), "127.0.0.1", False))
    assert [x.address for x in r.answer[0]] == ["192.0.2.10"]
    engine.regions.close()


def test_lb_share_counts_up_backends_over_pools():
    from proxy.geodns.health import lb_share

    status = {"pools": {"web": {"backends": [{"state": "up"}, {"state": "down"}, {"state": "draining"}]},
                        "api": {"backends": [{"state": "up"}]}}}  # fmt: skip
    assert lb_share(status) == (2, 4)
    assert lb_share({"pools": {}}) == (0, 0)
