"""geodns config: the example loads; errors name the file and the key path; check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.core.config import ConfigError, load_config
from proxy.geodns.config import GeoDnsConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "config" / "geodns.toml"

ZONE = '''
[[zones]]
origin = "example.test."
soa = { mname = "ns1.example.test.", rname = "h.example.test." }
ns = ["ns1.example.test."]
'''


def test_example_config_loads():
    cfg = load_config(EXAMPLE, GeoDnsConfig)
    assert set(cfg.datacenters) == {"east", "west"}
    assert {n.policy for n in cfg.zones[0].names} == {"geo", "weighted", "failover"}


@pytest.mark.parametrize("body, expected", [
    ('bogus = 1\n' + ZONE, "geodns.toml: bogus: unknown key"),
    ('[regions]\nnetworks = { "10.0.0.1/8" = "east" }\n' + ZONE, "geodns.toml: regions.networks: "),
    ('[datacenters.east]\naddresses = ["not-an-ip"]\n' + ZONE, "geodns.toml: datacenters.east.addresses: "),
    ('[datacenters.east]\naddresses = ["192.0.2.1"]\nhealth = [{ type = "tcp" }]\n' + ZONE,
     "geodns.toml: datacenters.east.health[0].address: a tcp target needs"),
    (ZONE + 'names = [{ name = "app", policy = "failover", datacenters = ["nowhere"] }]\n',
     "geodns.toml: zones[0].names[0]: no data center named 'nowhere'"),
    (ZONE + 'records = [{ name = "a", type = "A", value = "300.1.1.1" }]\n',
     "geodns.toml: zones[0].records[0].value: '300.1.1.1' is not a valid A record"),
    (ZONE + 'records = [{ name = "a", type = "CNAME", value = "b" }, { name = "a", type = "TXT", value = "x" }]\n',
     "geodns.toml: zones[0]: a.example.test.: a CNAME cannot sit beside other records"),
    ('listen = "127.0.0.1:99999"\n' + ZONE, "geodns.toml: listen: port 99999 out of range"),
])  # fmt: skip
def test_errors_are_located(tmp_path, body, expected):
    p = tmp_path / "geodns.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_config(p, GeoDnsConfig)
    assert any(line.startswith(expected) for line in exc.value.lines), exc.value.lines


def test_check_config_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(EXAMPLE)],
                        capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert ok.returncode == 0 and "ok (geodns)" in ok.stdout
    bad = tmp_path / "dns.toml"  # not named after the daemon: told apart by its [[zones]]
    bad.write_text('bogus = 1\n' + ZONE)
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2 and "dns.toml: bogus: unknown key" in proc.stderr
