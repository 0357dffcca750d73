"""cdn.toml's origin pool: `origins` shorthand or [[origin.servers]] (the lb's BackendConfig), the
lb's health-check model, and the located errors check-config prints."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from proxy.cdn.config import CdnConfig


def test_shorthand_names_servers_in_order_with_tcp_checks_by_default():
    cfg = CdnConfig(origins=["127.0.0.1:1", "127.0.0.1:2"])
    assert [(s.name, s.address) for s in cfg.origin_servers] == [("o1", "127.0.0.1:1"), ("o2", "127.0.0.1:2")]
    assert cfg.origin.health.type == "tcp"


def test_servers_table_with_lb_health_fields():
    cfg = CdnConfig(origin={"servers": [{"name": "a", "address": "127.0.0.1:1", "weight": 3},
                                        {"name": "b", "address": "127.0.0.1:2", "backup": True}],
                            "health": {"type": "http", "path": "/healthz", "interval": 1, "timeout": 0.5}})
    assert [s.name for s in cfg.origin_servers] == ["a", "b"]
    assert cfg.origin_servers[0].weight == 3 and cfg.origin_servers[1].backup
    assert cfg.origin.health.path == "/healthz"


@pytest.mark.parametrize("bad", [
    {},  # no origin at all
    {"origins": ["127.0.0.1:1"], "origin": {"servers": [{"name": "a", "address": "127.0.0.1:2"}]}},
    {"origin": {"servers": [{"name": "a", "address": "127.0.0.1:1"}, {"name": "a", "address": "127.0.0.1:2"}]}},
    {"origin": {"servers": [{"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:1"}]}},
    {"origins": ["127.0.0.1:1"], "origin": {"health": {"interval": 1, "timeout": 2}}},
    {"origins": ["127.0.0.1:1"], "origin": {"max_idle": -1}},
])
def test_refused(bad):
    with pytest.raises(ValidationError):
        CdnConfig(**bad)


def test_check_config_locates_the_error(tmp_path):
    path = tmp_path / "cdn.toml"
    path.write_text('[origin]\nhealth = { type = "udp" }\n[[origin.servers]]\nname = "a"\naddress = "127.0.0.1:1"\n')
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "origin.health.type" in out.stderr + out.stdout
