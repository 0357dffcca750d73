"""dbproxy config validation: the example config loads; errors name the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.core.config import ConfigError, load_config
from proxy.dbproxy.classify_functions import DEFAULT_WRITE_FUNCTIONS
from proxy.dbproxy.config import DbProxyConfig
from proxy.pgwire.auth import make_md5_hash

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "config" / "dbproxy.toml"

MINIMAL = """
[primary]
address = "127.0.0.1:5432"
[[replicas]]
name = "r1"
address = "127.0.0.1:5433"
[backend_auth]
user = "tierproxy"
[auth.users.app]
password = "pw"
"""


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE, DbProxyConfig)
    assert [r.name for r in cfg.replicas] == ["replica1", "replica2"]
    assert cfg.routing.read_your_writes == "lsn"
    assert "nextval" in cfg.routing.all_write_functions
    assert "app.create_order" in cfg.routing.all_write_functions
    assert cfg.auth.users["app"].secret is not None
    # Secrets stay out of reprs and logs.
    assert "ops-secret" not in repr(cfg)


def _load(tmp_path: Path, text: str) -> DbProxyConfig:
    p = tmp_path / "dbproxy.toml"
    p.write_text(text)
    return load_config(p, DbProxyConfig)


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value.lines


def test_minimal_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL)
    assert cfg.listen == "127.0.0.1:6432"
    assert cfg.admin.address == "127.0.0.1:9187"
    assert cfg.routing.primary_window == 1.0
    assert cfg.routing.all_write_functions == DEFAULT_WRITE_FUNCTIONS
    assert cfg.timeouts.query == 0.0
    assert cfg.auth.method == "scram-sha-256"


def test_bad_port_is_located(tmp_path: Path) -> None:
    text = MINIMAL + '[[replicas]]\nname = "r2"\naddress = "127.0.0.1:99999"\n'
    assert _errors(tmp_path, text) == ["dbproxy.toml: replicas[1].address: port 99999 out of range"]


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    text = MINIMAL + "[routing]\nread_your_write = \"off\"\n"
    assert _errors(tmp_path, text) == ["dbproxy.toml: routing.read_your_write: unknown key"]


def test_duplicate_replica_names(tmp_path: Path) -> None:
    text = MINIMAL + '[[replicas]]\nname = "r1"\naddress = "127.0.0.1:5434"\n'
    assert _errors(tmp_path, text) == ["dbproxy.toml: replicas: duplicate replica names: r1"]


def test_replica_at_the_primarys_address(tmp_path: Path) -> None:
    text = MINIMAL + '[[replicas]]\nname = "r2"\naddress = "127.0.0.1:5432"\n'
    assert _errors(tmp_path, text) == [
        "dbproxy.toml: replicas[1].address: 127.0.0.1:5432 is the primary's address"
    ]


def test_replica_named_primary_is_reserved(tmp_path: Path) -> None:
    text = MINIMAL + '[[replicas]]\nname = "primary"\naddress = "127.0.0.1:5434"\n'
    assert _errors(tmp_path, text) == ["dbproxy.toml: replicas[1].name: 'primary' is reserved"]


def test_listen_equals_admin(tmp_path: Path) -> None:
    text = 'listen = "127.0.0.1:7000"\n[admin]\naddress = "127.0.0.1:7000"\n' + MINIMAL
    assert _errors(tmp_path, text) == ["dbproxy.toml: listen: listen and admin.address must differ"]


def test_weight_out_of_range(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "r1"', 'name = "r1"\nweight = 0')
    (line,) = _errors(tmp_path, text)
    assert line.startswith("dbproxy.toml: replicas[0].weight: ")


def test_user_needs_exactly_one_secret(tmp_path: Path) -> None:
    text = MINIMAL.replace('password = "pw"', 'password = "pw"\nsecret = "md5' + "0" * 32 + '"')
    assert _errors(tmp_path, text) == [
        "dbproxy.toml: auth.users.app: give exactly one of password or secret"
    ]


def test_bad_secret_form(tmp_path: Path) -> None:
    text = MINIMAL.replace('password = "pw"', 'secret = "SCRAM-SHA-256$nope"')
    (line,) = _errors(tmp_path, text)
    assert line.startswith("dbproxy.toml: auth.users.app.secret: ")


def test_md5_hash_refused_for_scram_accepted_for_md5(tmp_path: Path) -> None:
    md5 = make_md5_hash("app", "pw")
    text = MINIMAL.replace('password = "pw"', f'secret = "{md5}"')
    assert _errors(tmp_path, text) == [
        "dbproxy.toml: auth.users.app.secret: an md5 hash cannot be used for scram-sha-256"
    ]
    cfg = _load(tmp_path, '[auth]\nmethod = "md5"\n' + text)
    assert cfg.auth.users["app"].is_md5_hash


def test_passthrough_needs_plaintext_passwords(tmp_path: Path) -> None:
    md5 = make_md5_hash("app", "pw")
    text = (
        MINIMAL.replace('user = "tierproxy"', 'mode = "passthrough"')
        .replace('password = "pw"', f'secret = "{md5}"')
        .replace("[primary]", '[auth]\nmethod = "md5"\n[primary]')
    )
    (line,) = _errors(tmp_path, text)
    assert line.startswith("dbproxy.toml: auth.users.app.password: backend_auth mode 'passthrough'")


def test_write_functions_are_lowercased_and_checked(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL + '[routing]\nwrite_functions = ["App.Create_Order"]\n')
    assert "app.create_order" in cfg.routing.all_write_functions
    (line,) = _errors(tmp_path, MINIMAL + '[routing]\nwrite_functions = ["drop table x"]\n')
    assert line.startswith("dbproxy.toml: routing.write_functions: ")


def test_monitor_timeout_above_interval(tmp_path: Path) -> None:
    (line,) = _errors(tmp_path, MINIMAL + "[monitor]\ninterval = 1.0\ntimeout = 2.0\n")
    assert line == "dbproxy.toml: monitor: timeout 2.0 must not exceed interval 1.0"


# -- [topology] (issue 16) ----------------------------------------------------------------------

_TOPO_BASE = {"backend_auth": {"mode": "service", "user": "postgres", "password": "x"},
              "auth": {"users": {"app": {"password": "p"}}}}


def _topo(topology: dict, **extra: object) -> DbProxyConfig:
    return DbProxyConfig.model_validate({**_TOPO_BASE, "topology": topology, **extra})


def test_topology_defaults_to_static_and_static_needs_a_primary() -> None:
    cfg = DbProxyConfig.model_validate({**_TOPO_BASE, "primary": {"address": "127.0.0.1:5432"}})
    assert cfg.topology.source == "static"
    assert cfg.topology.failover_hold_timeout == 30.0
    with pytest.raises(ValidationError, match="primary: field required"):
        DbProxyConfig.model_validate(_TOPO_BASE)


def test_topology_patroni_rest_and_etcd() -> None:
    cfg = _topo({"source": "patroni", "patroni_urls": ["http://10.0.0.1:8008/", "http://10.0.0.2:8008"],
                 "failover_hold_timeout": 5, "hold_queue_limit": 10})  # fmt: skip
    assert cfg.primary is None
    assert cfg.topology.patroni_urls == ["http://10.0.0.1:8008", "http://10.0.0.2:8008"]
    cfg = _topo({"source": "patroni", "etcd_urls": ["http://127.0.0.1:2379"], "scope": "main"})
    assert (cfg.topology.scope, cfg.topology.namespace) == ("main", "/service")


@pytest.mark.parametrize(
    ("topology", "extra", "message"),
    [
        ({"source": "patroni"}, {}, "either patroni_urls or etcd_urls"),
        ({"source": "patroni", "patroni_urls": ["http://a:1"], "etcd_urls": ["http://b:2"], "scope": "s"}, {},
         "either patroni_urls or etcd_urls"),
        ({"source": "patroni", "etcd_urls": ["http://b:2"]}, {}, "scope: etcd_urls need"),
        ({"source": "patroni", "patroni_urls": ["10.0.0.1:8008"]}, {}, "not a base URL"),
        ({"source": "static", "patroni_urls": ["http://a:1"]}, {"primary": {"address": "127.0.0.1:5432"}},
         "need source"),
        ({"source": "patroni", "patroni_urls": ["http://a:1"]}, {"primary": {"address": "127.0.0.1:5432"}},
         "remove \\[primary\\]"),
        ({"source": "patroni", "patroni_urls": ["http://a:1"], "hold_timeout": 3}, {}, "hold_timeout"),
        ({"source": "patroni", "patroni_urls": ["http://a:1"], "failover_hold_timeout": 0}, {},
         "failover_hold_timeout"),
    ],
)  # fmt: skip
def test_topology_errors_are_located(topology: dict, extra: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _topo(topology, **extra)
