"""The demo's map of ports (proxy/devstack/demo_map.py) and its load generator's command line."""

from __future__ import annotations

from proxy.devstack.demo_map import Tier, port_map
from proxy.devstack.demo_traffic import Targets, Tally, traffic_argv


def test_every_tier_is_a_row_with_its_ports_and_status_page():
    tiers = [Tier("DNS", "geodns", "127.0.0.1:5353", "http://127.0.0.1:9053/", "www.demo.test"),
             Tier("SQL", "dbproxy", "127.0.0.1:6432", "http://127.0.0.1:9187/", "Patroni: node1 127.0.0.1:5432"),
             Tier("Redis", "redis", "127.0.0.1:6379/0", "", "sessions")]
    lines = port_map(tiers)
    rows = {ln.split()[1]: ln for ln in lines if ln.startswith("  ") and len(ln.split()) > 3
            and ln.split()[0] in ("DNS", "SQL", "Redis")}  # fmt: skip
    assert set(rows) == {"geodns", "dbproxy", "redis"}
    assert "127.0.0.1:6432" in rows["dbproxy"] and "http://127.0.0.1:9187/" in rows["dbproxy"]
    assert rows["redis"].split()[3] == "-"  # no status page
    # the columns line up: every row's status page starts at the same column
    assert len({ln.index("http://") for ln in rows.values() if "http://" in ln}) == 1


def test_traffic_command_line_names_every_target():
    t = Targets(lb="http://127.0.0.1:8080", notes=True, cdn="http://127.0.0.1:8088", cdn_paths=("/static/a",),
                dns=("127.0.0.1", 5353), dbproxy="postgresql://app:s@127.0.0.1:6432/postgres",
                shard="postgresql://app:s@127.0.0.1:6433/postgres")
    argv = traffic_argv(t, duration=3)
    for flag, value in (("--lb", t.lb), ("--cdn", t.cdn), ("--dns", "127.0.0.1:5353"), ("--dbproxy", t.dbproxy),
                        ("--shard", t.shard), ("--duration", "3")):
        assert argv[argv.index(flag) + 1] == value
    assert "--notes" in argv


def test_tally_lines_show_errors_with_the_last_one():
    tally = Tally()
    tally.good("lb /whoami")
    tally.bad("dbproxy sql", ConnectionRefusedError("refused"))
    lines = tally.lines()
    assert lines[0].split()[:3] == ["dbproxy", "sql", "0"] and "last: ConnectionRefusedError: refused" in lines[0]
    assert lines[1].split()[:4] == ["lb", "/whoami", "1", "ok"]
