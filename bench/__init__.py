"""Benchmark harness for tierproxy daemons, run as `python -m bench <scenario>`.

Theory of operation (after uvloop's `examples/bench/`, with what it lacked added): the load
generator (wrk) is a separate process so it never shares an interpreter with the thing measured;
every scenario has a baseline (wrk straight at a backend) and well-known peers (nginx, HAProxy);
peers are measured in alternating rounds after a warm-up, and the report gives medians, p50/p95/p99,
error counts, the CPU the proxy itself burned, ratios to nginx, and machine info, as a table, JSON
and a PNG. Ratios, not absolute numbers, are the result: the machines have 2 cores that the client,
the proxy and the backends all share.

Modules:
    common   binaries, machine info, /proc CPU accounting, wrk runner and parser, medians, table
    servers  config files and launchers for the backends and each proxy under test
    backend  a tiny Python keep-alive HTTP backend, used only when nginx is not installed
    lb       the `lb` scenario: start everything, warm up, alternate rounds, report
    plot     the PNG bar chart (needs matplotlib: `pip install -e .[bench]`)
"""
