"""deploy/patroni/: the example of three etcd members, three Patroni nodes and the dbproxy is valid.

- each `patroni-node*.yml` passes Patroni's own `patroni --validate-config` (Debian's 3.0.2). That
  validator checks that the listen ports are free and that etcd answers, on the machine it runs
  on, so the example's 10.0.0.x addresses are replaced first: the nodes' by free loopback ports,
  etcd's by a real etcd member (proxy/devstack/patroni.py);
- `dbproxy.toml` passes `tierproxy check-config` (its token_file pointed at a real file);
- the three files agree: the etcd members' advertised client URLs are the dbproxy's etcd_urls and
  the Patroni nodes' etcd3 hosts; every node has the same scope, which is the dbproxy's; the
  members name each other in initial-cluster; node names are unique.
YAML is read with the system python3's yaml (Patroni's own dependency; the venv has none).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.core.config import load_config
from proxy.dbproxy.config import DbProxyConfig
from proxy.devstack.patroni import EtcdServer, etcd_binary, patroni_binary, start_etcd
from proxy.devstack.ports import allocate_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "patroni"
NODES = sorted(EXAMPLE.glob("patroni-node*.yml"))
NODE_HOST = "127.0.3.1"
ETCDS = sorted(EXAMPLE.glob("etcd*.yml"))

pytestmark = pytest.mark.skipif(etcd_binary() is None or patroni_binary() is None,
                                reason="patroni and etcd-server are not installed")  # fmt: skip


def system_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # Debian's patroni and yaml live on the system python3
    return env


def read_yaml(path: Path) -> Any:
    done = subprocess.run(["/usr/bin/python3", "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                          input=path.read_text(), capture_output=True, text=True, env=system_env(), check=True)  # fmt: skip
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("deploy-etcd"))
    try:
        yield server
    finally:
        server.close()


def test_the_example_has_three_of_each() -> None:
    assert [p.name for p in NODES] == ["patroni-node1.yml", "patroni-node2.yml", "patroni-node3.yml"]
    assert [p.name for p in ETCDS] == ["etcd1.yml", "etcd2.yml", "etcd3.yml"]


@pytest.mark.parametrize("node", NODES, ids=lambda p: p.name)
def test_patroni_validates_each_node(node: Path, etcd: EtcdServer, tmp_path: Path) -> None:
    text = node.read_text()
    locks = []
    # The node's own listen/connect addresses -> free loopback ports (the validator tries them; it
    # refuses 127.0.0.1 as a connect_address, which other nodes could not reach, so another one).
    for address in sorted(set(re.findall(r"10\.0\.0\.2\d:\d+", text))):
        lock = allocate_port(NODE_HOST)
        locks.append(lock)
        text = text.replace(address, f"{NODE_HOST}:{lock.port}")
    text = re.sub(r"10\.0\.0\.1\d:2379", f"127.0.0.1:{etcd.port}", text)  # a real etcd answers
    for lock in locks:
        lock.release()  # free, not listened on: what the validator wants of a listen address
    copy = tmp_path / node.name
    copy.write_text(text)
    done = subprocess.run([str(patroni_binary()), "--validate-config", str(copy)], capture_output=True,
                          text=True, env=system_env(), timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # The validator is not a rubber stamp: a wrong key is reported.
    copy.write_text(text.replace("ttl: 30", "ttl: thirty"))
    bad = subprocess.run([str(patroni_binary()), "--validate-config", str(copy)], capture_output=True,
                         text=True, env=system_env(), timeout=60, check=False)  # fmt: skip
    assert bad.returncode != 0 and "ttl" in bad.stdout + bad.stderr


def test_dbproxy_toml_passes_check_config(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("example-token\n")
    copy = tmp_path / "dbproxy.toml"
    copy.write_text((EXAMPLE / "dbproxy.toml").read_text().replace("/etc/tierproxy/admin.token", str(token)))
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(copy)], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and "ok (dbproxy)" in done.stdout, done.stdout + done.stderr
    cfg = load_config(copy, DbProxyConfig)
    assert cfg.topology.source == "patroni" and cfg.primary is None and cfg.admin.token == "example-token"


def test_etcd_patroni_and_dbproxy_agree(tmp_path: Path) -> None:
    etcds = [read_yaml(p) for p in ETCDS]
    nodes = [read_yaml(p) for p in NODES]
    token = tmp_path / "admin.token"
    token.write_text("t\n")
    copy = tmp_path / "dbproxy.toml"
    copy.write_text((EXAMPLE / "dbproxy.toml").read_text().replace("/etc/tierproxy/admin.token", str(token)))
    proxy = load_config(copy, DbProxyConfig).topology
    clients = [e["advertise-client-urls"] for e in etcds]
    assert proxy.etcd_urls == clients
    peers = {e["name"]: e["initial-advertise-peer-urls"] for e in etcds}
    for e in etcds:
        assert dict(kv.split("=", 1) for kv in e["initial-cluster"].split(",")) == peers
    for n in nodes:
        assert n["scope"] == proxy.scope
        assert n["namespace"].rstrip("/") == proxy.namespace
        assert ["http://" + h for h in n["etcd3"]["hosts"]] == clients
    assert len({n["name"] for n in nodes}) == 3
    assert len({n["postgresql"]["listen"] for n in nodes}) == 3
