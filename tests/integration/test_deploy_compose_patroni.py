"""deploy/compose/: PostgreSQL runs as three Patroni nodes (patroni.Dockerfile, patroni/*.yml) over
three etcd members, and the dbproxy follows that cluster (config/dbproxy.toml's [topology]).

- `docker-compose config`: the etcd and Patroni services exist, each node runs its own config from
  the mounted patroni/ folder, the old Bitnami primary/replica pair is gone, the dbproxy waits for
  the nodes;
- the three files agree: the etcd members' advertised client URLs are the dbproxy's etcd_urls and
  the nodes' etcd3 hosts, the nodes' scope/namespace are the dbproxy's, each node advertises its own
  service name, synchronous mode is on (as deploy/patroni/), and the node that bootstraps creates
  the role the dbproxy logs in as and the database the apps use;
- each node's YAML passes Patroni's own `patroni --validate-config` (Debian's 3.0.2), with the
  container addresses replaced by free loopback ports and a real etcd (as test_deploy_patroni.py).
No Docker engine here: no image is built and no container started (docs/deploy.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from proxy.core.config import load_config
from proxy.dbproxy.config import DbProxyConfig
from proxy.devstack.patroni import EtcdServer, etcd_binary, patroni_binary, start_etcd
from proxy.devstack.ports import allocate_port
from tests.integration.test_deploy_patroni import system_env

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
NODES = sorted((COMPOSE / "patroni").glob("patroni-node*.yml"))
NODE_HOST = "127.0.3.2"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack() -> dict:
    tool = shutil.which("docker-compose", path=str(BIN)) or shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    run = subprocess.run([tool, "config"], cwd=COMPOSE, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)


@pytest.fixture(scope="module")
def dbproxy(tmp_path_factory: pytest.TempPathFactory) -> DbProxyConfig:
    d = tmp_path_factory.mktemp("compose-dbproxy")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dbproxy",
                    "-keyout", str(d / "admin.key"), "-out", str(d / "admin.crt")], check=True, capture_output=True)
    (d / "admin.token").write_text("0123456789abcdef\n")
    local = d / "dbproxy.toml"
    local.write_text((COMPOSE / "config" / "dbproxy.toml").read_text().replace("/certs/", f"{d}/"))
    return load_config(local, DbProxyConfig)


def test_compose_runs_three_patroni_nodes_over_etcd(stack: dict) -> None:
    services = stack["services"]
    assert "pg-primary" not in services and "pg-replica" not in services
    assert [p.name for p in NODES] == ["patroni-node1.yml", "patroni-node2.yml", "patroni-node3.yml"]
    for i in (1, 2, 3):
        svc = services[f"patroni{i}"]
        assert svc["build"]["dockerfile"] == "patroni.Dockerfile"
        assert svc["command"] == [f"/etc/patroni/patroni-node{i}.yml"]
        mounts = {target: (source, mode) for source, target, mode in (v.split(":") for v in svc["volumes"])}
        assert mounts["/etc/patroni"] == (str(COMPOSE / "patroni"), "ro")
        assert mounts["/var/lib/postgresql/data"][0] in stack["volumes"]  # a named volume: the data outlives it
        assert {f"etcd{j}" for j in (1, 2, 3)} <= set(svc["depends_on"])
        assert services[f"etcd{i}"]["environment"]["ETCD_NAME"] == f"etcd{i}"
    deps = services["dbproxy"]["depends_on"]
    assert {"patroni1", "patroni2", "patroni3"} <= set(deps), deps
    assert all(deps[f"patroni{i}"]["condition"] == "service_healthy" for i in (1, 2, 3))


def test_dbproxy_follows_the_compose_patroni_cluster(stack: dict, dbproxy: DbProxyConfig) -> None:
    services = stack["services"]
    nodes = [yaml.safe_load(p.read_text()) for p in NODES]
    topo = dbproxy.topology
    assert topo.source == "patroni" and dbproxy.primary is None and not dbproxy.replicas
    clients = [services[f"etcd{i}"]["environment"]["ETCD_ADVERTISE_CLIENT_URLS"] for i in (1, 2, 3)]
    assert [str(u).rstrip("/") for u in topo.etcd_urls] == clients == [f"http://etcd{i}:2379" for i in (1, 2, 3)]
    peers = {f"etcd{i}": services[f"etcd{i}"]["environment"]["ETCD_INITIAL_ADVERTISE_PEER_URLS"] for i in (1, 2, 3)}
    for i in (1, 2, 3):
        cluster = services[f"etcd{i}"]["environment"]["ETCD_INITIAL_CLUSTER"]
        assert dict(kv.split("=", 1) for kv in cluster.split(",")) == peers
    for i, n in enumerate(nodes, 1):
        assert n["scope"] == topo.scope and n["namespace"].rstrip("/") == topo.namespace
        assert ["http://" + h for h in n["etcd3"]["hosts"]] == clients
        assert n["name"] == f"node{i}"
        assert n["restapi"]["connect_address"] == f"patroni{i}:8008"  # the image's HEALTHCHECK port
        assert n["postgresql"]["connect_address"] == f"patroni{i}:5432"  # what the dbproxy connects to
        assert n["bootstrap"]["dcs"]["synchronous_mode"] is True
        # The node that bootstraps makes the dbproxy's backend role and the apps' database.
        post = n["bootstrap"]["post_bootstrap"]
        assert f"CREATE ROLE {dbproxy.backend_auth.user} LOGIN PASSWORD '{dbproxy.backend_auth.password.get_secret_value()}'" in post
        assert f"CREATE DATABASE app OWNER {dbproxy.backend_auth.user}" in post
    assert "postgresql://app:app-secret@dbproxy:6432/app" in services["web1"]["command"]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    if etcd_binary() is None or patroni_binary() is None:
        pytest.skip("patroni and etcd-server are not installed")
    server = start_etcd(tmp_path_factory.mktemp("compose-etcd"))
    try:
        yield server
    finally:
        server.close()


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(patroni_binary()), "--validate-config", str(path)], capture_output=True,
                          text=True, env=system_env(), timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize("node", NODES, ids=lambda p: p.name)
def test_patroni_validates_each_compose_node(node: Path, etcd: EtcdServer, tmp_path: Path) -> None:
    text = node.read_text()
    # The container's listen (0.0.0.0) and advertised (patroniN) addresses -> a free loopback port
    # per port number (the validator tries to bind them and refuses 127.0.0.1 as connect_address);
    # the etcd service names -> a real etcd member; data in a temp dir.
    locks = []
    for port in ("5432", "8008"):
        lock = allocate_port(NODE_HOST)
        locks.append(lock)
        text = re.sub(rf"(?:0\.0\.0\.0|patroni\d):{port}\b", f"{NODE_HOST}:{lock.port}", text)
    text = re.sub(r"etcd\d:2379", f"127.0.0.1:{etcd.port}", text)
    text = text.replace("/var/lib/postgresql/data/pgdata", str(tmp_path / "pgdata"))
    for lock in locks:
        lock.release()
    assert not re.search(r"\b(?:patroni|etcd)\d:\d|0\.0\.0\.0", text)  # every container address replaced
    copy = tmp_path / node.name
    copy.write_text(text)
    done = _validate(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    copy.write_text(text.replace("ttl: 30", "ttl: thirty"))  # not a rubber stamp
    bad = _validate(copy)
    assert bad.returncode != 0 and "ttl" in bad.stdout + bad.stderr
