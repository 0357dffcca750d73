"""The reshard dry run's arithmetic (pure): which keys and rows move between two configs.

`tierproxy shard reshard --from OLD.toml --to NEW.toml` is not built yet; this is the part of its
dry run that needs no database. Given the two configs and, per table group, each key's row count
(which the command will read from the shards with ``SELECT key, count(*) ... GROUP BY key``),
`dry_run` says how many keys and rows move per (source, target) shard pair, and how many stay.

Both configs must shard the same tables by the same key in the same groups: moving a table to
another group or changing its key column is a migration, not a reshard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import ShardConfig
from .maps import Key, key_moves

__all__ = ["GroupMoves", "ReshardError", "dry_run", "render_dry_run"]


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


def _check_compatible(old: ShardConfig, new: ShardConfig) -> None:
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
    _check_compatible(old, new)
    old_maps, new_maps = old.maps(), new.maps()
    out = []
    for group in old.groups:
        counts = key_rows.get(group, {})
        moved = key_moves(old_maps[group], new_maps[group], counts)
        moves = {pair: (len(keys), sum(counts[k] for k in keys)) for pair, keys in sorted(moved.items())}
        out.append(GroupMoves(group, len(counts), sum(counts.values()), moves))
    return out


def render_dry_run(report: list[GroupMoves]) -> str:
    """The dry run as the command prints it: one line per (group, source, target), then totals."""
    lines = [f"{'group':<16} {'from':<12} {'to':<12} {'keys':>10} {'rows':>12}"]
    for g in report:
        for (src, dst), (keys, rows) in g.moves.items():
            lines.append(f"{g.group:<16} {src:<12} {dst:<12} {keys:>10} {rows:>12}")
        pct = 100.0 * g.rows_moving / g.rows_total if g.rows_total else 0.0
        lines.append(f"{g.group:<16} {'(total)':<12} {'':<12} {g.keys_moving:>10} {g.rows_moving:>12}"
                     f"  {pct:.1f}% of {g.rows_total} rows move")
    return "\n".join(lines)
