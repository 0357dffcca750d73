"""Console commands: parsing (round trips of keys, case, semicolons, garbage) and rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.shard.console import (
    ShowHotKeys,
    ShowShardFor,
    ShowShards,
    parse_command,
    quote_key,
    render_hot_keys,
    render_shard_for,
    render_shards,
)
from proxy.shard.hotkeys import HotKeys
from proxy.shard.keys import Refuse
from proxy.shard.maps import INT8_MAX, INT8_MIN, DedicatedMap, ModuloMap, RangeMap

MAPS = {
    "users": DedicatedMap(ModuloMap(("s0", "s1", "s2", "s3")), {42: "hot"}),
    "tenants": DedicatedMap(RangeMap(("s0", "s1"), ("m",)), {}),
}
TYPES = {"users": "integer", "tenants": "text"}
KINDS = {"users": "modulo", "tenants": "range"}


@pytest.mark.parametrize(
    ("sql", "cmd"),
    [
        ("SHOW SHARDS", ShowShards()),
        ("show shards;", ShowShards()),
        ("  Show   Shards ; ", ShowShards()),
        ("SHOW SHARD FOR 42", ShowShardFor("42")),
        ("show shard for -7 in users", ShowShardFor("-7", "users")),
        ("SHOW SHARD FOR 'o''brien' IN tenants;", ShowShardFor("o'brien", "tenants")),
        ("SHOW SHARD FOR acme", ShowShardFor("acme")),
        ("SHOW HOT KEYS", ShowHotKeys()),
        ("show hot keys 5", ShowHotKeys(5)),
    ],
)
def test_parse(sql: str, cmd: object) -> None:
    assert parse_command(sql) == cmd


@pytest.mark.parametrize("sql", ["SHOW SHARD FOR", "SHOW SHARD FOR 1 2", "SHOW HOT KEYS x", "show shards now"])
def test_malformed_commands_are_syntax_errors(sql: str) -> None:
    got = parse_command(sql)
    assert isinstance(got, Refuse) and got.sqlstate == "42601"


@pytest.mark.parametrize("sql", ["SHOW POOLS", "select 1", "SHOW search_path", ""])
def test_other_text_is_not_ours(sql: str) -> None:
    assert parse_command(sql) is None


@given(st.one_of(st.integers(INT8_MIN, INT8_MAX), st.text(min_size=0, max_size=30)),
       st.sampled_from(["SHOW SHARD FOR ", "show shard for ", "Show Shard  For\t"]),
       st.sampled_from(["", ";", " in users", " IN tenants ;"]))
def test_any_key_round_trips(key: int | str, head: str, tail: str) -> None:
    got = parse_command(head + quote_key(key) + tail)
    assert isinstance(got, ShowShardFor)
    assert got.key == str(key)
    assert got.group == ({"": None, ";": None}.get(tail) if tail in ("", ";")
                         else tail.split()[1])


@given(st.text(max_size=40))
def test_garbage_never_raises(text: str) -> None:
    got = parse_command(text)
    assert got is None or isinstance(got, Refuse | ShowShards | ShowShardFor | ShowHotKeys)


def test_render_shards() -> None:
    cols, rows = render_shards({"s0": "127.0.0.1:5440", "s1": "127.0.0.1:5441"}, {"s0": "up"}, {"s0": 12})
    assert cols == ("name", "address", "state", "rows_routed")
    assert rows == [("s0", "127.0.0.1:5440", "up", "12"), ("s1", "127.0.0.1:5441", "unknown", "0")]


def test_render_shard_for() -> None:
    cols, rows = render_shard_for(ShowShardFor("42"), MAPS, TYPES, KINDS)  # type: ignore[misc]
    assert cols == ("group", "key", "shard", "via")
    assert rows == [("users", "42", "hot", "dedicated"), ("tenants", "42", "s0", "range")]
    _, rows = render_shard_for(ShowShardFor("7", "users"), MAPS, TYPES, KINDS)  # type: ignore[misc]
    assert rows == [("users", "7", "s3", "modulo")]
    _, rows = render_shard_for(ShowShardFor("zed"), MAPS, TYPES, KINDS)  # type: ignore[misc]
    assert rows == [("tenants", "zed", "s1", "range")]
    bad = render_shard_for(ShowShardFor("zed", "users"), MAPS, TYPES, KINDS)
    assert isinstance(bad, Refuse) and bad.sqlstate == "22P02"
    missing = render_shard_for(ShowShardFor("1", "nope"), MAPS, TYPES, KINDS)
    assert isinstance(missing, Refuse) and missing.sqlstate == "42704"


def test_render_hot_keys() -> None:
    hk = HotKeys(["s0", "s1"], capacity=10)
    for _ in range(3):
        hk.record("users", 42, "s1")
    hk.record("users", 7, "s0")
    cols, rows = render_hot_keys(hk.top(5))
    assert cols == ("group", "key", "shard", "count", "error", "share")
    assert rows == [("users", "42", "s1", "3", "0", "0.7500"), ("users", "7", "s0", "1", "0", "0.2500")]
