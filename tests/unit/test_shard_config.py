"""shard.toml validation: the example loads; cross-field errors name the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.config import ConfigError, load_config, parse_config
from proxy.shard.config import ShardConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "config" / "shard.toml"

MINIMAL = """
[shards.a]
address = "127.0.0.1:5440"
[shards.b]
address = "127.0.0.1:5441"
[backend_auth]
user = "tierproxy"
[auth.users.app]
password = "pw"
[groups.users]
tables = ["users"]
key = "user_id"
"""


def _errors(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "shard.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p, ShardConfig)
    return info.value.lines


def _load(tmp_path: Path, text: str) -> ShardConfig:
    p = tmp_path / "shard.toml"
    p.write_text(text)
    return load_config(p, ShardConfig)


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE, ShardConfig)
    assert list(cfg.shards) == ["s0", "s1", "s2", "s3", "hot"]
    maps = cfg.maps()
    assert maps["users"].shard_for(42) == "hot"
    assert maps["users"].shard_for(1) == "s0"  # as HashMap computes it (checked against PostgreSQL elsewhere)
    assert maps["events"].shard_for(999_999) == "s0"
    assert maps["events"].shard_for(1_000_000) == "s1"
    assert maps["events"].shard_for(5_000_000) == "s2"
    assert maps["tenants"].shard_for("acme") in {"s0", "s1", "s2", "s3"}
    assert cfg.table_groups()["app.tenant_events"] == "tenants"
    assert "app-secret" not in repr(cfg)


def test_minimal_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL)
    assert cfg.scatter == "allow" and cfg.workers == 1
    assert cfg.groups["users"].map == "hash"
    assert cfg.maps()["users"].shards == ("a", "b")


def test_dedicated_shard_must_exist(tmp_path: Path) -> None:
    text = MINIMAL + 'dedicated = { "7" = "nope" }\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.users.dedicated: key '7' names no shard 'nope'"
    ]


def test_dedicated_key_must_match_the_key_type(tmp_path: Path) -> None:
    text = MINIMAL + 'dedicated = { "seven" = "a" }\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.users.dedicated: key 'seven' is not an integer"
    ]


def test_table_in_one_group_only(tmp_path: Path) -> None:
    text = MINIMAL + '[groups.other]\ntables = ["orders", "USERS"]\nkey = "id"\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.other.tables[1]: table 'users' is already in group 'users'"
    ]


def test_key_column_is_required(tmp_path: Path) -> None:
    text = MINIMAL.replace('key = "user_id"\n', "")
    assert _errors(tmp_path, text) == ["shard.toml: groups.users.key: Field required"]


def test_unknown_shard_in_group(tmp_path: Path) -> None:
    text = MINIMAL + 'shards = ["a", "c"]\n'
    assert _errors(tmp_path, text) == ["shard.toml: groups.users.shards[1]: no shard named 'c'"]


RANGE = MINIMAL.replace('key = "user_id"', 'key = "user_id"\nmap = "range"')


def test_range_bounds_must_increase(tmp_path: Path) -> None:
    text = RANGE + 'ranges = [{ shard = "a", below = 100 }, { shard = "b", below = 50 }, { shard = "a" }]\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.users.ranges[1].below: bounds must increase (100 then 50)"
    ]


def test_range_must_cover_every_key(tmp_path: Path) -> None:
    text = RANGE + 'ranges = [{ shard = "a", below = 100 }, { shard = "b", below = 200 }]\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.users.ranges[1].below: only the last range has no upper bound "
        "(so the ranges cover every key)"
    ]


def test_range_shard_must_exist(tmp_path: Path) -> None:
    text = RANGE + 'ranges = [{ shard = "a", below = 100 }, { shard = "zz" }]\n'
    assert _errors(tmp_path, text) == ["shard.toml: groups.users.ranges[1].shard: no shard named 'zz'"]


def test_modulo_needs_integer_keys(tmp_path: Path) -> None:
    text = MINIMAL + 'map = "modulo"\nkey_type = "text"\n'
    assert _errors(tmp_path, text) == ["shard.toml: groups.users.map: 'modulo' needs key_type 'integer'"]


def test_ranges_only_for_range(tmp_path: Path) -> None:
    text = MINIMAL + 'ranges = [{ shard = "a" }]\n'
    assert _errors(tmp_path, text) == [
        "shard.toml: groups.users.ranges: only map 'range' takes ranges, not 'hash'"
    ]


def test_scatter_values_and_unknown_keys(tmp_path: Path) -> None:
    assert _errors(tmp_path, 'scatter = "maybe"\n' + MINIMAL) == [
        "shard.toml: scatter: Input should be 'allow' or 'deny'"
    ]
    assert _errors(tmp_path, MINIMAL + "vnode = 3\n") == ["shard.toml: groups.users.vnode: unknown key"]


def test_two_shards_at_one_address(tmp_path: Path) -> None:
    text = MINIMAL + '[shards.c]\naddress = "127.0.0.1:5441"\n'
    assert _errors(tmp_path, text) == ["shard.toml: shards.c.address: 127.0.0.1:5441 is also shard 'b'"]



@given(st.lists(st.integers(-10**12, 10**12), min_size=1, max_size=5), st.integers(-10**13, 10**13))
def test_range_config_loads_iff_bounds_increase(bounds: list[int], key: int) -> None:
    ranges = [{"shard": "a" if i % 2 else "b", "below": b} for i, b in enumerate(bounds)] + [{"shard": "a"}]
    data = {"shards": {"a": {"address": "127.0.0.1:5440"}, "b": {"address": "127.0.0.1:5441"}},
            "backend_auth": {"user": "t"}, "auth": {"method": "trust"},
            "groups": {"g": {"tables": ["t"], "key": "k", "map": "range", "ranges": ranges}}}
    increasing = all(x < y for x, y in zip(bounds, bounds[1:]))
    if not increasing:
        with pytest.raises(ConfigError):
            parse_config(data, ShardConfig)
        return
    cfg = parse_config(data, ShardConfig)
    i = sum(1 for b in bounds if b <= key)  # ranges[i] holds the key
    assert cfg.maps()["g"].shard_for(key) == ranges[i]["shard"]
