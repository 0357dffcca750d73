"""Resharding's decisions (pure): which keys move, in which key ranges, and whether copies match.

`tierproxy shard reshard --from OLD.toml --to NEW.toml` (reshard_run.py) does the I/O; everything
it decides is here, without a database:

* `check_compatible(old, new)`: both configs shard the same tables by the same key in the same
  groups (moving a table to another group or changing its key column is a migration, not a
  reshard), a shard named in both has one address, and the router can switch by reload (same
  `listen`, `admin.address`, `workers`).
* `dry_run(old, new, key_rows)`: per group, the keys and rows that move per (source, target) shard
  pair, from each key's row count (read from the shards with ``SELECT key, count(*) ... GROUP BY
  key``); `render_dry_run` prints it with the rows that stay.
* `outgoing(...)`, `incoming(...)`, `stale_rows(...)`: from the keys found on each shard, the keys a
  source must copy to each target (those it owns under OLD whose NEW shard differs), the copies a
  target already holds from a source, and after the switch the rows a shard holds that NEW does
  not put there (what phase 3 deletes).
* `key_ranges(keys, size)`: sorted keys cut into ranges of at most `size` keys: the unit of copying
  and of verification; `mismatched(ranges, source, target)` compares the (row count, md5)
  digests both shards computed per range and names the ranges to copy again.
* `routing_fingerprint(config)`: a digest of what routing depends on (shards' addresses, groups),
  so the command can tell whether the running router routes by OLD or already by NEW.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import ShardConfig
from .maps import Key, ShardMap, key_moves

__all__ = [
    "Digest",
    "GroupMoves",
    "KeyRange",
    "ReshardError",
    "all_shard_addresses",
    "check_compatible",
    "dry_run",
    "incoming",
    "key_ranges",
    "mismatched",
    "outgoing",
    "render_dry_run",
    "routing_fingerprint",
    "stale_rows",
]

Digest = tuple[int, str | None]  # (rows, md5 of the rows' text in order); (0, None): no rows


class ReshardError(ValueError):
    """The two configs are not a reshard of one another."""


@dataclass(frozen=True)
class GroupMoves:
    group: str
    keys_total: int
    rows_total: int
    moves: Mapping[tuple[str, str], tuple[int, int]]  # (source, target) -> (keys, rows)

    @property
    def keys_moving(self) -> int:
        return sum(k for k, _ in self.moves.values())

    @property
    def rows_moving(self) -> int:
        return sum(r for _, r in self.moves.values())


def _check_groups(old: ShardConfig, new: ShardConfig) -> None:
    if set(old.groups) != set(new.groups):
        raise ReshardError(f"table groups differ: {sorted(old.groups)} and {sorted(new.groups)}")
    for name, g in old.groups.items():
        n = new.groups[name]
        if set(g.tables) != set(n.tables):
            raise ReshardError(f"group {name}: tables differ ({sorted(g.tables)} and {sorted(n.tables)})")
        if (g.key, g.key_type) != (n.key, n.key_type):
            raise ReshardError(f"group {name}: the key changes ({g.key} {g.key_type} -> "
                               f"{n.key} {n.key_type})")


def dry_run(old: ShardConfig, new: ShardConfig,
            key_rows: Mapping[str, Mapping[Key, int]]) -> list[GroupMoves]:
    """Per group: the keys and rows that move, by (source, target) shard."""
    _check_groups(old, new)
    old_maps, new_maps = old.maps(), new.maps()
    out = []
    for group in old.groups:
        counts = key_rows.get(group, {})
        moved = key_moves(old_maps[group], new_maps[group], counts)
        moves = {pair: (len(keys), sum(counts[k] for k in keys)) for pair, keys in sorted(moved.items())}
        out.append(GroupMoves(group, len(counts), sum(counts.values()), moves))
    return out


def render_dry_run(report: list[GroupMoves]) -> str:
    """The dry run as the command prints it: one line per (group, source, target), the keys and
    rows that stay, then the group's totals."""
    lines = [f"{'group':<16} {'from':<12} {'to':<12} {'keys':>10} {'rows':>12}"]
    for g in report:
        for (src, dst), (keys, rows) in g.moves.items():
            lines.append(f"{g.group:<16} {src:<12} {dst:<12} {keys:>10} {rows:>12}")
        lines.append(f"{g.group:<16} {'(stay)':<12} {'':<12} {g.keys_total - g.keys_moving:>10} "
                     f"{g.rows_total - g.rows_moving:>12}")
        pct = 100.0 * g.rows_moving / g.rows_total if g.rows_total else 0.0
        lines.append(f"{g.group:<16} {'(total)':<12} {'':<12} {g.keys_moving:>10} {g.rows_moving:>12}"
                     f"  {pct:.1f}% of {g.rows_total} rows move")
    return "\n".join(lines)


def check_compatible(old: ShardConfig, new: ShardConfig) -> None:
    """Raise ReshardError unless `new` is a reshard of `old` the running router can switch to."""
    _check_groups(old, new)
    for name in set(old.shards) & set(new.shards):
        if old.shards[name].address != new.shards[name].address:
            raise ReshardError(f"shard {name}: its address changes ({old.shards[name].address} -> "
                               f"{new.shards[name].address}); change addresses by reload, not by a reshard")
    if (old.listen, old.admin.address, old.workers) != (new.listen, new.admin.address, new.workers):
        raise ReshardError("listen, admin.address and workers must be the same in both configs "
                           "(the router switches to the new config by reload)")


def all_shard_addresses(old: ShardConfig, new: ShardConfig) -> dict[str, str]:
    """Every shard of either config (OLD's order, then NEW's additions) -> its address."""
    out = {name: s.address for name, s in old.shards.items()}
    out.update({name: s.address for name, s in new.shards.items() if name not in out})
    return out


def routing_fingerprint(cfg: ShardConfig) -> str:
    """A digest of what routing depends on: each shard's address and each group's settings."""
    data = {"shards": {n: s.address for n, s in cfg.shards.items()},
            "groups": {n: g.model_dump(mode="json") for n, g in sorted(cfg.groups.items())}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def outgoing(source: str, keys: Iterable[Key], old: ShardMap, new: ShardMap) -> dict[str, list[Key]]:
    """The keys found on `source` that it must copy out: those OLD places on it (a copy left by
    an earlier, stopped run is not the source's to copy) and NEW places elsewhere; by target,
    each list sorted."""
    out: dict[str, list[Key]] = {}
    for k in keys:
        if old.shard_for(k) == source:
            dst = new.shard_for(k)
            if dst != source:
                out.setdefault(dst, []).append(k)
    for v in out.values():
        v.sort()  # type: ignore[call-overload]
    return out


def incoming(target: str, source: str, keys: Iterable[Key], old: ShardMap, new: ShardMap) -> set[Key]:
    """The keys found on `target` that are copies from `source`: OLD places them on the source
    (so no client wrote them to the target) and NEW on the target."""
    return {k for k in keys if old.shard_for(k) == source and new.shard_for(k) == target}


def stale_rows(shard: str, keys: Iterable[Key], new: ShardMap) -> list[Key]:
    """After the switch: the keys found on `shard` whose NEW shard is another one (moved rows'
    old copies, or copies left by a stopped run); sorted."""
    out = [k for k in keys if new.shard_for(k) != shard]
    out.sort()  # type: ignore[call-overload]
    return out


@dataclass(frozen=True)
class KeyRange:
    """Consecutive keys (in sort order) copied and verified together."""

    number: int
    keys: tuple[Key, ...]

    @property
    def first(self) -> Key:
        return self.keys[0]

    @property
    def last(self) -> Key:
        return self.keys[-1]


def key_ranges(keys: Sequence[Key], size: int) -> list[KeyRange]:
    """`keys` sorted and cut into ranges of at most `size` keys, numbered from 0."""
    if size < 1:
        raise ValueError("a key range holds at least one key")
    ordered = sorted(set(keys))  # type: ignore[type-var]
    return [KeyRange(i, tuple(ordered[j : j + size])) for i, j in enumerate(range(0, len(ordered), size))]


def mismatched(ranges: Sequence[KeyRange], source: Mapping[int, Digest],
               target: Mapping[int, Digest]) -> list[KeyRange]:
    """The ranges whose digests differ between source and target (a range with no rows on a side
    is (0, None) there): they must be copied again."""
    empty: Digest = (0, None)
    return [r for r in ranges if source.get(r.number, empty) != target.get(r.number, empty)]
