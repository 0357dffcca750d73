"""geodns answers from the pure handler (`Engine.handle`): rcodes, RFC 2308 negative answers,
EDNS/BADVERS, TC, ANY, case, ECS; the wire cache agrees with a fresh build and skips dnspython;
malformed input (hypothesis) gets FORMERR or is dropped, never an exception."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.config import parse_config
from proxy.geodns.config import GeoDnsConfig
from proxy.geodns.handler import Engine

CFG = {
    "regions": {"networks": {"127.0.0.2/32": "east", "127.0.0.3/32": "west", "10.1.0.0/16": "east",
                             "10.2.0.0/16": "west"}},
    "datacenters": {"east": {"addresses": ["192.0.2.10"]}, "west": {"addresses": ["198.51.100.10"]}},
    "zones": [{
        "origin": "example.test.", "ttl": 300,
        "soa": {"mname": "ns1.example.test.", "rname": "h.example.test.", "minimum": 60},
        "ns": ["ns1.example.test."],
        "records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"},
                    {"name": "www", "type": "CNAME", "value": "app"},
                    {"name": "a.deep", "type": "TXT", "value": '"hi"'},
                    {"name": "@", "type": "MX", "value": "10 mail.example.test."}]
                   + [{"name": "big", "type": "TXT", "value": '"' + "x" * 200 + f'{i}"'} for i in range(12)],
        "names": [{"name": "app", "policy": "geo", "ttl": 30, "datacenters": ["east", "west"],
                   "regions": {"east": {"datacenters": ["east", "west"]}, "west": {"datacenters": ["west", "east"]}}},
                  {"name": "split", "policy": "weighted", "weights": {"east": 70, "west": 30}}],
    }],
}  # fmt: skip


@pytest.fixture
def engine() -> Engine:
    return Engine(parse_config(CFG, GeoDnsConfig))


def ask(engine: Engine, q: dns.message.Message, src: str = "127.0.0.2", tcp: bool = False) -> dns.message.Message:
    out = engine.handle(q.to_wire(), src, tcp)
    assert out is not None
    return dns.message.from_wire(out)


def test_regions_get_their_dc(engine):
    east = ask(engine, dns.message.make_query("app.example.test", "A"), "127.0.0.2")
    west = ask(engine, dns.message.make_query("app.example.test", "A"), "127.0.0.3")
    assert [r.address for r in east.answer[0]] == ["192.0.2.10"]
    assert [r.address for r in west.answer[0]] == ["198.51.100.10"]
    assert east.flags & dns.flags.AA


def test_ecs_decides_and_is_echoed_with_scope(engine):
    q = dns.message.make_query("app.example.test", "A", use_edns=0,
                               options=[dns.edns.ECSOption("10.2.7.0", 24)])  # fmt: skip
    r = ask(engine, q, "127.0.0.2")  # the source says east, ECS says west
    assert [x.address for x in r.answer[0]] == ["198.51.100.10"]
    (ecs,) = r.options
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("10.2.7.0", 24, 16)  # matched 10.2.0.0/16
    # a name whose answer is the same for everyone: scope 0
    q = dns.message.make_query("ns1.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.2.7.0", 24)])
    assert ask(engine, q).options[0].scopelen == 0


def test_cname_to_policy_name(engine):
    r = ask(engine, dns.message.make_query("www.example.test", "A"), "127.0.0.3")
    assert r.answer[0].rdtype == dns.rdatatype.CNAME
    assert [x.address for x in r.answer[1]] == ["198.51.100.10"]


def test_nxdomain_and_nodata_carry_the_soa(engine):
    nx = ask(engine, dns.message.make_query("nope.example.test", "A"))
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].ttl == 60
    for name, qtype in (("ns1.example.test", "AAAA"), ("deep.example.test", "A"), ("app.example.test", "MX")):
        r = ask(engine, dns.message.make_query(name, qtype))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer, name  # NODATA (empty non-terminal too)
        assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_refused_formerr_notimp_badvers(engine):
    assert ask(engine, dns.message.make_query("example.org", "A")).rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("app.example.test", "A")
    q.question.append(q.question[0])
    assert ask(engine, q).rcode() == dns.rcode.FORMERR
    q = dns.message.make_query("app.example.test", "A")
    q.set_opcode(dns.opcode.STATUS)
    assert ask(engine, q).rcode() == dns.rcode.NOTIMP
    q = dns.message.make_query("app.example.test", "A", use_edns=1)
    r = ask(engine, q)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


def test_tc_over_udp_full_over_tcp(engine):
    q = dns.message.make_query("big.example.test", "TXT")
    udp = ask(engine, q)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(engine, q, tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 12
    # a client's 4096 is capped at our max_udp_payload (1232, DNS flag day 2020): still TC
    q = dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=4096)
    r = ask(engine, q)
    assert r.flags & dns.flags.TC and r.payload == 1232
    # an answer that fits 1232 but not 512 comes whole with EDNS, truncated without
    q = dns.message.make_query("big.example.test", "TXT")
    cfg = parse_config({**CFG, "max_udp_payload": 4096}, GeoDnsConfig)
    r = ask(Engine(cfg), dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=4096))
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 12


def test_any_is_minimal_and_case_is_kept(engine):
    r = ask(engine, dns.message.make_query("ExAmPlE.test", "ANY"))
    assert len(r.answer) == 1
    q = dns.message.make_query("aPP.ExAmple.TEST", "A")
    for _ in range(2):  # built, then from the cache
        wire = engine.handle(q.to_wire(), "127.0.0.2", False)
        assert b"\x03aPP\x07ExAmple\x04TEST\x00" in wire


def test_cache_hit_equals_fresh_build_and_skips_dnspython(engine, monkeypatch):
    queries = [dns.message.make_query(n, t, use_edns=e, options=o)
               for n in ("app.example.test", "Split.example.test", "www.example.test", "nx.example.test")
               for t in ("A", "AAAA") for e in (False, 0)
               for o in ([], [dns.edns.ECSOption("10.1.2.0", 24)])]  # fmt: skip
    queries = [q for q in queries if q.edns == 0 or not q.options]
    fresh = [engine.handle(q.to_wire(), "127.0.0.3", False) for q in queries]
    misses = engine.cache.misses

    def boom(*_a, **_k):
        raise AssertionError("dnspython used on a cache hit")

    monkeypatch.setattr(dns.message, "from_wire", boom)
    for q, want in zip(queries, fresh):
        q.id = (q.id + 1) % 65536
        got = engine.handle(q.to_wire(), "127.0.0.3", False)
        assert got == q.to_wire()[:2] + want[2:]
    assert engine.cache.misses == misses and engine.cache.hits >= len(queries)


def test_ecs_address_patched_into_cached_answer(engine):
    a = dns.message.make_query("app.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.2.7.0", 24)])
    b = dns.message.make_query("app.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.2.9.0", 24)])
    ask(engine, a)
    hits = engine.cache.hits
    r = ask(engine, b)
    assert engine.cache.hits == hits + 1
    assert r.options[0].address == "10.2.9.0"


def test_state_change_moves_answers(engine):
    q = dns.message.make_query("app.example.test", "A")
    ask(engine, q, "127.0.0.2")
    engine.set_state({"east": False, "west": True}, [])
    assert [x.address for x in ask(engine, q, "127.0.0.2").answer[0]] == ["198.51.100.10"]
    engine.set_state({"east": True, "west": True}, ["east"])  # drained: out, and lower TTL
    r = ask(engine, q, "127.0.0.2")
    assert [x.address for x in r.answer[0]] == ["198.51.100.10"] and r.answer[0].ttl == 5


# -- malformed input -------------------------------------------------------------------------

# Parsed once (a frozen model): parsing was 2/3 of each garbage example's time; every example still
# gets an Engine of its own.
PARSED = parse_config(CFG, GeoDnsConfig)

def _check_garbage(engine: Engine, wire: bytes) -> None:
    out = engine.handle(wire, "127.0.0.2", False)
    assert engine.errors == 0
    if out is None:
        return
    assert out[:2] == wire[:2] and out[2] & 0x80
    r = dns.message.from_wire(out)
    assert r.rcode() in (dns.rcode.FORMERR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED,
                         dns.rcode.NOTIMP, dns.rcode.BADVERS)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(wire):
    _check_garbage(Engine(PARSED), wire)


GOOD = dns.message.make_query("app.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.2.7.0", 24)]).to_wire()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD)), st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=6))
def test_truncated_and_mutated_queries(cut, flips):
    wire = bytearray(GOOD[:cut])
    for pos, val in flips:
        if pos < len(wire):
            wire[pos] = val
    _check_garbage(Engine(PARSED), bytes(wire))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535))
def test_huge_counts(qd, an, ns, ar):
    wire = GOOD[:4] + struct.pack(">HHHH", qd, an, ns, ar) + GOOD[12:]
    _check_garbage(Engine(PARSED), wire)


def test_compression_loops_get_formerr(engine):
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for name in (b"\xc0\x0c", b"\x03abc\xc0\x0c", b"\xc0\x0e\xc0\x0c", b"\xc0\xff"):
        out = engine.handle(header + name + b"\x00\x01\x00\x01", "127.0.0.2", False)
        assert out is not None and out[:2] == b"\x12\x34" and out[3] & 0x0F == dns.rcode.FORMERR
    assert engine.handle(b"\x12\x34\x01", "127.0.0.2", False) is None  # short header: dropped
    resp = bytearray(GOOD)
    resp[2] |= 0x80
    assert engine.handle(bytes(resp), "127.0.0.2", False) is None  # a response: dropped
    assert engine.errors == 0


# one engine that caches, one that builds every answer
ENGINES = (Engine(parse_config(CFG, GeoDnsConfig)), Engine(parse_config({**CFG, "cache_size": 0}, GeoDnsConfig)))
NAMES = ["app.example.test", "www.example.test", "split.example.test", "ns1.example.test", "example.test",
         "nx.example.test", "deep.example.test", "big.example.test", "example.org"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NAMES), st.lists(st.booleans(), min_size=20, max_size=20),
       st.sampled_from(["A", "AAAA", "TXT", "MX", "ANY", "SOA", "NS", "CNAME"]),
       st.sampled_from([None, 0]), st.integers(0, 4096), st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32))),
       st.sampled_from(["127.0.0.2", "127.0.0.3", "10.2.0.1", "::1"]), st.booleans(), st.integers(0, 65535))
def test_cached_answers_equal_fresh_builds(name, upper, qtype, edns, payload, ecs, src, tcp, qid):
    """Whatever the question's case, EDNS, buffer size, ECS, source or transport: the answer from
    the cache is byte for byte what dnspython builds for that query."""
    name = "".join(c.upper() if u else c for c, u in zip(name, upper * 3))
    opts = []
    if ecs is not None and edns is not None:
        import ipaddress
        addr, plen = ecs
        net = ipaddress.ip_network(f"{ipaddress.IPv4Address(addr)}/{plen}", strict=False)
        opts = [dns.edns.ECSOption(str(net.network_address), plen)]
    q = dns.message.make_query(name, qtype, use_edns=edns if edns is not None else False, payload=payload or 512,
                               options=opts)  # fmt: skip
    q.id = qid
    cached, fresh = ENGINES  # shared by all examples: whatever one left in the cache must fit the next
    wire = q.to_wire()
    want = fresh.handle(wire, src, tcp)
    # the wire cache filled by the same question in other letters under another ID: patched
    q.question[0].name = dns.name.from_text(name.swapcase())
    q.id = (qid + 1) % 65536
    cached.handle(q.to_wire(), src, tcp)
    assert cached.handle(wire, src, tcp) == want
    # the same query again under another ID: the repeat cache
    assert cached.handle(q.to_wire()[:2] + wire[2:], src, tcp) == q.to_wire()[:2] + want[2:]
    assert cached.errors == fresh.errors == 0


def test_edns_do_copied_unknown_flags_and_options_ignored(engine):
    q = dns.message.make_query("app.example.test", "A", use_edns=0, want_dnssec=True)
    for _ in range(2):  # built, then cached
        r = ask(engine, q)
        assert r.ednsflags & dns.flags.DO and [x.address for x in r.answer[0]] == ["192.0.2.10"]
    q = dns.message.make_query("app.example.test", "A", use_edns=0, ednsflags=0x4000,
                               options=[dns.edns.GenericOption(100, b"xyz")])  # fmt: skip
    r = ask(engine, q)
    assert r.rcode() == dns.rcode.NOERROR and r.ednsflags == 0 and not r.options
