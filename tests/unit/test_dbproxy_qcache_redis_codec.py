"""The shared level's pure parts (issue 20): key names, entries, channel messages, write marks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.dbproxy.qcache_redis import Keys, Lookup, decode_entry, decode_message, encode_entry, encode_message
from proxy.dbproxy.qcache_shared import WriteMarks

names = st.text(min_size=0, max_size=12)


def test_key_layout():
    k = Keys("tq")
    assert k.read_keys(b"\x01\xff", frozenset({"u", "t"})) == [
        "tq:e:01ff", "tq:epoch", "tq:pend", "tq:v:t", "tq:v:u", "tq:p:t", "tq:p:u"]  # fmt: skip
    assert k.write_keys(None) == ["tq:epoch", "tq:pend"]
    assert k.write_keys(frozenset({"t"})) == ["tq:v:t", "tq:p:t"]
    # a table named like a key of another kind still has its own keys
    assert k.version("epoch") != k.epoch and k.marks("pend") != k.all_marks


@given(st.binary(max_size=20).filter(lambda b: b"\n" not in b), st.binary(max_size=50),
       st.binary(max_size=20).filter(lambda b: b"\n" not in b))  # fmt: skip
def test_an_entry_is_returned_only_under_its_own_versions(vers, answer, other):
    entry = encode_entry(vers, answer)
    assert decode_entry(entry, vers) == answer
    if other != vers:
        assert decode_entry(entry, other) is None


def test_lookup_reply():
    assert Lookup.from_reply([b"5,1", 0, b"5,1\nrows", 900]) == Lookup(b"5,1", False, b"rows", 900)
    assert Lookup.from_reply([b"5,1", 1, None, 0]) == Lookup(b"5,1", True, None, 0)
    assert Lookup.from_reply([b"5,2", 0, b"5,1\nrows", 900]).answer is None


@given(names, st.none() | st.frozensets(names, max_size=4))
def test_messages_round_trip(db, tables):
    assert decode_message(encode_message(db, tables)) == (db, tables)
    assert decode_message(encode_message(db, tables).encode()) == (db, tables)


def test_foreign_messages_are_ignored():
    for bad in (b"", b"x", b"[]", b'{"db": 1, "tables": null}', b'{"db": "d"}', b'{"db": "d", "tables": [1]}',
                b'{"db": "d", "tables": "t"}'):  # fmt: skip
        assert decode_message(bad) is None


def test_write_marks():
    m = WriteMarks()
    assert m.missing(frozenset({"t"})) == frozenset({"t"})
    m.add(frozenset({"t"}))
    assert m.missing(frozenset({"t"})) == frozenset()
    assert m.missing(frozenset({"t", "u"})) == frozenset({"u"})
    assert m.missing(None) is None
    m.add(None)
    assert m.missing(None) == frozenset() and m.missing(frozenset({"z"})) == frozenset()
    assert WriteMarks().token != WriteMarks().token


def test_cache_redis_config(tmp_path):
    import pytest

    from proxy.core.config import ConfigError, load_config
    from proxy.dbproxy.config import DbProxyConfig

    base = ('[primary]\naddress = "127.0.0.1:5432"\n[backend_auth]\nuser = "tierproxy"\n'
            '[auth.users.app]\npassword = "pw"\n[cache]\nenabled = true\n')  # fmt: skip
    p = tmp_path / "dbproxy.toml"
    p.write_text("workers = 2\n" + base + 'redis = "redis://127.0.0.1:6379/0"\n')
    cfg = load_config(p, DbProxyConfig).cache
    assert (cfg.redis, cfg.redis_prefix, cfg.redis_timeout, cfg.write_lease) == (
        "redis://127.0.0.1:6379/0", "tierproxy:qc", 0.5, 10.0)
    for bad in ('redis = "http://x"', 'redis = "redis://x"\nredis_prefix = "a b"', 'redis = "redis://x"\nwrite_lease = 0'):
        p.write_text(base + bad + "\n")
        with pytest.raises(ConfigError):
            load_config(p, DbProxyConfig)
    p.write_text("workers = 2\n" + base)
    with pytest.raises(ConfigError):
        load_config(p, DbProxyConfig)  # several workers need the shared level
