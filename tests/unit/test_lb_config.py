"""LB config validation: every example config loads; errors name the file and the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import main as cli_main
from proxy.core.config import ConfigError, load_config, parse_hostport
from proxy.lb.config import LbConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "deploy" / "config").glob("lb*.toml"))

MINIMAL = """
listen = "127.0.0.1:8080"
[pools.web]
[[pools.web.backends]]
name = "web1"
address = "127.0.0.1:8001"
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_load(path: Path) -> None:
    cfg = load_config(path, LbConfig)
    assert cfg.pools
    for pool in cfg.pools.values():
        assert pool.backends


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def _errors(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "lb.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p, LbConfig)
    return info.value.lines


def test_port_out_of_range_is_located(tmp_path: Path) -> None:
    text = MINIMAL + '[[pools.web.backends]]\nname = "web2"\naddress = "127.0.0.1:99999"\n'
    assert _errors(tmp_path, text) == [
        "lb.toml: pools.web.backends[1].address: port 99999 out of range"
    ]


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    text = MINIMAL.replace("[pools.web]\n", "[pools.web]\nalgoritm = \"round_robin\"\n")
    assert _errors(tmp_path, text) == ["lb.toml: pools.web.algoritm: unknown key"]


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = MINIMAL + "[pools.web.health]\nrise = 0\ninterval = -1\n"
    lines = _errors(tmp_path, text)
    assert any(line.startswith("lb.toml: pools.web.health.rise: ") for line in lines)
    assert any(line.startswith("lb.toml: pools.web.health.interval: ") for line in lines)


def test_bad_algorithm_and_duplicates(tmp_path: Path) -> None:
    text = MINIMAL.replace("[pools.web]\n", '[pools.web]\nalgorithm = "fastest"\n')
    text += '[[pools.web.backends]]\nname = "web1"\naddress = "127.0.0.1:8002"\n'
    lines = _errors(tmp_path, text)
    assert any(line.startswith("lb.toml: pools.web.algorithm: ") for line in lines)


def test_duplicate_backend_names(tmp_path: Path) -> None:
    text = MINIMAL + '[[pools.web.backends]]\nname = "web1"\naddress = "127.0.0.1:8002"\n'
    assert _errors(tmp_path, text) == ["lb.toml: pools.web: duplicate backend names: web1"]


def test_sticky_needs_secret(tmp_path: Path) -> None:
    text = MINIMAL.replace("[pools.web]\n", '[pools.web]\nmode = "sticky"\n')
    assert _errors(tmp_path, text) == [
        "lb.toml: pools.web: mode 'sticky' needs a [sticky] table with a secret"
    ]


def test_route_to_missing_pool(tmp_path: Path) -> None:
    text = MINIMAL + '[[routes]]\npool = "api"\n'
    assert _errors(tmp_path, text) == ["lb.toml: routes[0].pool: no pool named 'api'"]


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "listen = \n")
    assert len(lines) == 1 and lines[0].startswith("lb.toml: invalid TOML: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), (":8080", ("127.0.0.1", 8080)), ("[::1]:53", ("::1", 53))],
)
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


@pytest.mark.parametrize("value", ["", "localhost", "h:0", "h:65536", "h:x", "::1:80", "[::1]80"])
def test_parse_hostport_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(value)


def test_check_config_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "lb.toml"
    good.write_text(MINIMAL)
    assert cli_main(["check-config", str(good)]) == 0
    bad = tmp_path / "lb-bad.toml"
    bad.write_text(MINIMAL.replace("127.0.0.1:8001", "127.0.0.1:0"))
    assert cli_main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lb-bad.toml: pools.web.backends[0].address: port 0 out of range" in err


def test_check_config_console_script(tmp_path: Path) -> None:
    bad = tmp_path / "lb.toml"
    bad.write_text(MINIMAL + "[limits]\nmax_header_bytes = 10\n")
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("lb.toml: limits.max_header_bytes: ")
