"""The benches' ratios to a peer (lb: nginx): the median of per-round ratios, not a ratio of medians."""

from __future__ import annotations

from bench.common import round_ratio


def run(rnd: int, target: str, rps: float, per_cpu: float | None) -> dict:
    return {"round": rnd, "target": target, "requests_per_s": rps, "req_per_cpu_s": per_cpu}


def test_each_round_is_compared_with_nginx_in_the_same_round():
    # nginx is fast in round 1 and slow in round 3; tierproxy moves with it. Per round the ratios
    # are 0.8, 0.8, 0.8; a ratio of medians would give 16/30 = 0.53.
    runs = [run(1, "tierproxy", 40, 40), run(1, "nginx", 50, 50),
            run(2, "tierproxy", 16, 16), run(2, "nginx", 20, 20),
            run(3, "tierproxy", 8, 8), run(3, "nginx", 10, 10),
            run(1, "direct", 100, None)]  # fmt: skip
    assert round_ratio(runs, "tierproxy", "nginx", "requests_per_s") == 0.8
    assert round_ratio(runs, "tierproxy", "nginx", "req_per_cpu_s") == 0.8
    assert round_ratio(runs, "nginx", "nginx", "requests_per_s") == 1.0
    assert round_ratio(runs, "direct", "nginx", "requests_per_s") == 2.0
    assert round_ratio(runs, "direct", "nginx", "req_per_cpu_s") is None  # no proxy CPU for wrk-direct


def test_a_round_without_nginx_gives_no_ratio():
    runs = [run(1, "tierproxy", 40, 40), run(2, "nginx", 50, 50)]
    assert round_ratio(runs, "tierproxy", "nginx", "requests_per_s") is None
    runs.append(run(2, "tierproxy", 30, 30))
    assert round_ratio(runs, "tierproxy", "nginx", "requests_per_s") == 0.6
