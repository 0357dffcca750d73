"""Every tierproxy daemon started once, light, and its /metrics scraped: what deploy/prometheus's
rules and deploy/grafana's dashboards may name (tests/integration/test_deploy_monitoring.py).

Started: lb, geodns and cdn (their backends, health targets and origins are dead loopback ports:
the daemons still serve and export every family), a queue worker with its `metrics` address on a
real redis-server, a dbproxy with the query cache on and a shard router (keyed reads of a table of
its own) over two shards (the primary and a replica), on the shared `pg_cluster`. A few requests first so that labelled families have samples (their label
names can then be checked too).

The dbproxy's failover family (`failovers_total`, `writes_held`, ...) is exported only while it
follows Patroni, which is too heavy to start here: its names come from the daemon's own code
(`cluster_view.failover_metrics` rendered on a topology status); test_dbproxy_patroni_ops.py reads
`tierproxy_dbproxy_failovers_total` from a live Patroni-following dbproxy.
"""

from __future__ import annotations

import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.devstack.daemons import start_daemon
from proxy.devstack.dbproxy import start_dbproxy
from proxy.devstack.poll import wait_until
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import ManagedProcess, python_child_env
from proxy.devstack.queue_worker import queue_worker_config
from proxy.devstack.redis import start_redis
from proxy.devstack.shard import start_shard_router

REPO = Path(__file__).resolve().parents[2]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
_SUFFIXES = {"counter": ("", "_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("", "_sum", "_count"), "untyped": ("",)}


@dataclass
class Exported:
    """Series names (with a histogram's _bucket/_sum/_count) -> label names seen on their samples."""

    names: dict[str, set[str]] = field(default_factory=dict)
    by_daemon: dict[str, set[str]] = field(default_factory=dict)

    def add(self, daemon: str, text: str) -> None:
        mine = self.by_daemon.setdefault(daemon, set())
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()[:4]
                base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
                for suffix in _SUFFIXES.get(kind, ("",)):
                    self.names.setdefault(base + suffix, set())
                    mine.add(base + suffix)
                continue
            m = _SAMPLE.match(line)
            if m and not line.startswith("#"):
                labels = {lbl for lbl in _LABEL.findall(m.group(3) or "") if lbl != "le"}
                self.names.setdefault(m.group(1), set()).update(labels)
                mine.add(m.group(1))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _get(url: str) -> None:
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except OSError:
        pass  # a 502/503 from a dead backend is what we want counted


def failover_family_text() -> str:
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from proxy.dbproxy.cluster_view import failover_metrics

    status: dict[str, Any] = {
        "failovers_total": 0, "hold_seconds": {"bounds": [1.0], "counts": [0, 0], "sum": 0.0, "count": 0},
        "held_total": 0, "hold_timeouts": 0, "hold_refused": 0, "sessions_cut": 0, "writes_held": False,
        "held_now": 0, "members": [{"role": "leader"}], "source_health": {"healthy": True, "errors": 0},
    }

    class _C:
        def collect(self):  # type: ignore[no-untyped-def]
            return failover_metrics(status)

    reg = CollectorRegistry()
    reg.register(_C())
    return generate_latest(reg).decode()


def start_all(tmp: Path, pg_cluster: Any, cleanup: list[Any]) -> Exported:
    """Start every daemon (each stopper appended to `cleanup`) and scrape them. The daemons start in
    parallel threads: each waits for its first health checks, and the waits add up otherwise."""
    dead = allocate_port()  # nothing listens here: a backend, an origin, health targets
    cleanup.append(dead.release)
    for sub in ("dbproxy", "shard", "redis"):
        (tmp / sub).mkdir(exist_ok=True)
    starters = {"lb": _lb, "geodns": _geodns, "cdn": _cdn, "queue": _queue, "dbproxy": _dbproxy, "shard": _shard}
    with ThreadPoolExecutor(len(starters)) as pool:
        futures = {name: pool.submit(fn, tmp, dead.port, pg_cluster, cleanup) for name, fn in starters.items()}
        texts = {name: f.result() for name, f in futures.items()}
    out = Exported()
    for name, text in texts.items():
        out.add(name, text)
    out.add("dbproxy", failover_family_text())
    return out


def _lb(tmp: Path, dead: int, _pg: Any, cleanup: list[Any]) -> str:
    port, admin = allocate_port(), allocate_port()
    cleanup += [port.release, admin.release]
    lb = start_daemon("lb", f'listen = "127.0.0.1:{port.port}"\n[admin]\naddress = "127.0.0.1:{admin.port}"\n'
                      f'[pools.web]\n[[pools.web.backends]]\nname = "web1"\naddress = "127.0.0.1:{dead}"\n',
                      admin_port=admin.port, log_dir=tmp, name="lb")
    cleanup.append(lb.close)
    for _ in range(3):
        _get(f"http://127.0.0.1:{port.port}/")
    return scrape(admin.port)


def _geodns(tmp: Path, dead: int, _pg: Any, cleanup: list[Any]) -> str:
    from tests.integration.geodnsproc import allocate_dns_port

    port, admin = allocate_dns_port(), allocate_port()
    cleanup += [port.release, admin.release]
    geo = (REPO / "deploy/config/geodns.toml").read_text()
    for old, new in (("127.0.0.1:5353", f"127.0.0.1:{port.port}"), ("127.0.0.1:9053", f"127.0.0.1:{admin.port}"),
                     ("127.0.0.1:8080", f"127.0.0.1:{dead}"), ("127.0.0.1:9080", f"127.0.0.1:{dead}")):
        geo = geo.replace(old, new)
    g = start_daemon("geodns", geo, admin_port=admin.port, log_dir=tmp, name="geodns")
    cleanup.append(g.close)
    _dns_query(port.port)
    return scrape(admin.port)


def _cdn(tmp: Path, dead: int, _pg: Any, cleanup: list[Any]) -> str:
    port, admin = allocate_port(), allocate_port()
    cleanup += [port.release, admin.release]
    cdn = start_daemon("cdn", f'listen = "127.0.0.1:{port.port}"\norigins = ["127.0.0.1:{dead}"]\n'
                       f'admin = {{ address = "127.0.0.1:{admin.port}" }}\n', admin_port=admin.port, log_dir=tmp,
                       name="cdn")
    cleanup.append(cdn.close)
    _get(f"http://127.0.0.1:{port.port}/x")
    return scrape(admin.port)


def _queue(tmp: Path, _dead: int, _pg: Any, cleanup: list[Any]) -> str:
    redis = start_redis(log_dir=tmp / "redis")
    cleanup.append(redis.close)
    metrics = allocate_port()
    cleanup.append(metrics.release)
    cfg = tmp / "queue.toml"
    cfg.write_text(queue_worker_config(redis.url, {"jobs": "tests.integration.queue_handlers:run"}).replace(
        "concurrency", f'metrics = "127.0.0.1:{metrics.port}"\nconcurrency', 1))
    worker = ManagedProcess([sys.executable, "-m", "proxy.cli", "queue", "worker", "--config", str(cfg), "--name",
                             "w1"], name="qworker", log_dir=tmp, env=python_child_env())
    cleanup.append(lambda: worker.terminate(10))
    wait_until(lambda: _answers(metrics.port), 30, "the queue worker's /metrics")
    return scrape(metrics.port)


def _dbproxy(tmp: Path, _dead: int, pg: Any, cleanup: list[Any]) -> str:
    db = start_dbproxy(pg, log_dir=tmp / "dbproxy", extra="[cache]\nenabled = true\n")
    cleanup.append(db.close)
    return scrape(db.admin_port)


def _shard(tmp: Path, _dead: int, pg: Any, cleanup: list[Any]) -> str:
    import psycopg

    # A table of our own on the shared cluster (replicated to the replica that is shard s1): keyed
    # reads through the router make the hot-key families (skew, hottest key share) appear.
    pg.primary.psql("CREATE TABLE IF NOT EXISTS livemetrics_users (user_id bigint PRIMARY KEY, name text)")
    pg.replicas[0].wait_replayed(pg.primary.current_lsn())
    groups = '[groups.users]\ntables = ["livemetrics_users"]\nkey = "user_id"\nmap = "modulo"\n'
    shard = start_shard_router({"s0": pg.primary, "s1": pg.replicas[0]}, log_dir=tmp / "shard", backend_user=pg.user,
                               backend_password=pg.password, groups=groups)
    cleanup.append(shard.close)
    with psycopg.connect(shard.dsn(), autocommit=True) as conn:
        for key in (1, 2, 7, 7, 7):
            conn.execute("SELECT * FROM livemetrics_users WHERE user_id = %s", (key,)).fetchall()
    return scrape(shard.admin_port)


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def _dns_query(port: int) -> None:
    import dns.message
    import dns.query

    for name in ("www.example.test.", "nothing.example.test."):
        try:
            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
        except Exception:
            pass
