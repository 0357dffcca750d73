"""The PNG bar chart of a benchmark summary: req/s and requests per proxy CPU-second per target.

matplotlib is optional (`pip install -e '.[bench]'`): without it `bar_chart` returns False and the
harness still writes its table and JSON. The Agg backend is chosen explicitly so plotting works
without a display. Each bar is labelled with its ratio to nginx, the number the report is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["bar_chart", "grouped_bar_chart"]

_COLOURS = {"tierproxy": "#1f77b4", "tierproxy-asyncio": "#6baed6", "nginx": "#2ca02c",
            "haproxy": "#ff7f0e", "direct": "#7f7f7f", "pgbouncer": "#2ca02c", "pgpool": "#ff7f0e",
            "dnsmasq": "#2ca02c", "powerdns": "#ff7f0e", "celery": "#2ca02c", "arq": "#ff7f0e"}


def _finish(fig: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bar_chart(rows: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Write the chart to `path`; False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = (
        ("requests_per_s", "rps_vs_nginx", "requests/s (median)"),
        ("req_per_cpu_s", "cpu_eff_vs_nginx", "requests per proxy CPU-second (median)"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (key, ratio_key, label) in zip(axes, panels):
        shown = [r for r in rows if r.get(key) is not None]
        names = [r["target"] for r in shown]
        values = [r[key] for r in shown]
        bars = ax.bar(names, values, color=[_COLOURS.get(n, "#9467bd") for n in names])
        for bar, row in zip(bars, shown):
            ratio = row.get(ratio_key)
            text = f"{row[key]:,.0f}" + (f"\n×{ratio:.2f} nginx" if ratio is not None else "")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=15, labelsize=9)
        ax.margins(y=0.2)
    _finish(fig, title, path)
    return True


def grouped_bar_chart(rows: Sequence[dict[str, Any]], path: Path, *, group: str, series: str,
                      panels: Sequence[tuple[str, ...]], title: str) -> bool:  # fmt: skip
    """Bars of `rows` grouped by `group` (e.g. workload), one bar per `series` value (e.g. target),
    one subplot per (key, label) or (key, label, format of the bar labels, default ",.0f") in
    `panels`. False (and no file) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = list(dict.fromkeys(r[group] for r in rows))
    names = list(dict.fromkeys(r[series] for r in rows))
    width = 0.8 / max(1, len(names))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, label, *fmt) in zip(axes[0], panels):
        for i, name in enumerate(names):
            xs, ys = [], []
            for g, gname in enumerate(groups):
                row = next((r for r in rows if r[group] == gname and r[series] == name), None)
                if row is not None and row.get(key) is not None:
                    xs.append(g + i * width)
                    ys.append(row[key])
            if not ys:
                continue  # e.g. "direct" has no proxy CPU
            bars = ax.bar(xs, ys, width, label=name, color=_COLOURS.get(name))
            for bar, y in zip(bars, ys):
                ax.annotate(format(y, fmt[0] if fmt else ",.0f"), (bar.get_x() + bar.get_width() / 2, y), ha="center",
                            va="bottom", fontsize=7)
        ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))], groups, fontsize=9)
        ax.set_title(label, fontsize=10)
        ax.margins(y=0.15)
        ax.legend(fontsize=8)
    _finish(fig, title, path)
    return True
