"""The shard router's console commands, pgbouncer style: parsing and rendering (pure).

    SHOW SHARDS                       name, address, state, rows_routed
    SHOW SHARD FOR <key> [IN <group>] group, key, shard, via (the map kind or "dedicated")
    SHOW HOT KEYS [<n>]               group, key, shard, count, error, share

`parse_command(sql)` gives a command value, `None` when the text is not one of these (the
session handles it otherwise), or a `Refuse` (42601) for a malformed one. A key is an integer,
a single-quoted string ('' for a quote) or a bare word; keywords are case-insensitive and a
trailing semicolon is allowed. The `render_*` functions turn plain data from the daemon into
(columns, rows) of text values, which the session writes as RowDescription and DataRows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .hotkeys import HotKey
from .keys import Refuse
from .maps import DedicatedMap, Key, KeyTypeError

__all__ = [
    "ShowHotKeys",
    "ShowShardFor",
    "ShowShards",
    "parse_command",
    "quote_key",
    "render_hot_keys",
    "render_shard_for",
    "render_shards",
]

Rows = tuple[tuple[str, ...], list[tuple[str | None, ...]]]
SYNTAX_ERROR = "42601"
UNDEFINED_OBJECT = "42704"
DEFAULT_HOT_KEYS = 20


@dataclass(frozen=True)
class ShowShards:
    pass


@dataclass(frozen=True)
class ShowShardFor:
    key: str  # as written (quotes removed); converted per group's key type when rendered
    group: str | None = None


@dataclass(frozen=True)
class ShowHotKeys:
    limit: int = DEFAULT_HOT_KEYS


Command = ShowShards | ShowShardFor | ShowHotKeys

_KEY = r"(?P<key>'(?:[^']|'')*'|[+-]?[0-9]+|[A-Za-z_][A-Za-z0-9_$.-]*)"
_SHOW = re.compile(r"\A\s*show\s+(?P<rest>.*?)\s*;?\s*\Z", re.IGNORECASE | re.DOTALL)
_SHARDS = re.compile(r"\Ashards\Z", re.IGNORECASE)
_FOR = re.compile(r"\Ashard\s+for\s+" + _KEY + r"(?:\s+in\s+(?P<group>[A-Za-z0-9][A-Za-z0-9_.-]*))?\Z",
                  re.IGNORECASE | re.DOTALL)
_HOT = re.compile(r"\Ahot\s+keys(?:\s+(?P<n>[0-9]+))?\Z", re.IGNORECASE)
_OURS = re.compile(r"\A(shards|shard\s|hot\s+keys)", re.IGNORECASE)


def quote_key(key: Key) -> str:
    """How to write `key` in SHOW SHARD FOR: integers bare, text single-quoted."""
    if isinstance(key, int):
        return str(key)
    return "'" + key.replace("'", "''") + "'"


def parse_command(sql: str) -> Command | Refuse | None:
    m = _SHOW.match(sql)
    if m is None:
        return None
    rest = m.group("rest")
    if _SHARDS.match(rest):
        return ShowShards()
    if (f := _FOR.match(rest)) is not None:
        key = f.group("key")
        if key.startswith("'"):
            key = key[1:-1].replace("''", "'")
        return ShowShardFor(key, f.group("group"))
    if (h := _HOT.match(rest)) is not None:
        n = int(h.group("n")) if h.group("n") else DEFAULT_HOT_KEYS
        return ShowHotKeys(n)
    if _OURS.match(rest):
        return Refuse(SYNTAX_ERROR, "expected SHOW SHARDS, SHOW SHARD FOR <key> [IN <group>] "
                                    "or SHOW HOT KEYS [<n>]")
    return None


def _text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render_shards(addresses: Mapping[str, str], states: Mapping[str, str],
                  rows_routed: Mapping[str, int]) -> Rows:
    """SHOW SHARDS: every configured shard, in config order."""
    cols = ("name", "address", "state", "rows_routed")
    rows = [(name, addr, states.get(name, "unknown"), _text(rows_routed.get(name, 0)))
            for name, addr in addresses.items()]
    return cols, rows


def render_shard_for(cmd: ShowShardFor, maps: Mapping[str, DedicatedMap],
                     key_types: Mapping[str, str], map_kinds: Mapping[str, str]) -> Rows | Refuse:
    """SHOW SHARD FOR: the shard the key maps to now, in the named group or in every group."""
    if cmd.group is not None and cmd.group not in maps:
        return Refuse(UNDEFINED_OBJECT, f"no table group named {cmd.group!r}")
    groups = [cmd.group] if cmd.group is not None else list(maps)
    cols = ("group", "key", "shard", "via")
    rows: list[tuple[str | None, ...]] = []
    for g in groups:
        key: Key
        if key_types[g] == "integer":
            if not re.fullmatch(r"[+-]?[0-9]+", cmd.key):
                if cmd.group is not None:
                    return Refuse("22P02", f"group {g} has integer keys, not {cmd.key!r}")
                continue
            key = int(cmd.key)
        else:
            key = cmd.key
        m = maps[g]
        try:
            shard = m.shard_for(key)
        except KeyTypeError as exc:
            if cmd.group is not None:
                return Refuse("22P02", str(exc))
            continue
        via = "dedicated" if m.is_dedicated(key) else map_kinds.get(g, "")
        rows.append((g, str(key), shard, via))
    return cols, rows


def render_hot_keys(hot: Iterable[HotKey]) -> Rows:
    """SHOW HOT KEYS: hottest first; count is an upper bound, count - error a lower one."""
    cols = ("group", "key", "shard", "count", "error", "share")
    rows = [(h.group, str(h.key), h.shard, _text(h.count), _text(h.error), _text(h.share))
            for h in hot]
    return cols, rows
