"""deploy/systemd/: every unit passes `systemd-analyze verify` and scores OK (at most 2.0) under
`systemd-analyze security --offline`, runs the real `tierproxy` with arguments it accepts, and its
config example (deploy/config/) loads.

The units name /opt/tierproxy/bin/tierproxy (the documented install); verify checks that the
binary exists, so the copy checked here names the `tierproxy` entry point of the Python running
the tests instead, and nothing else is changed. Templates are checked as an instance (@1).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.core.config import load_config
from workers.queue.config import WorkerConfig

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/tierproxy/bin/tierproxy"
TIERPROXY = Path(sys.executable).parent / "tierproxy"
EXPOSURE_MAX = 20  # systemd-analyze security scores x 10: 2.0
RELOADABLE = {"lb", "dbproxy", "shard", "geodns", "cdn"}


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/dev.sh setup installs it)")
    return tool


def _checked_copy(unit: Path, tmp_path: Path) -> Path:
    out = tmp_path / unit.name.replace("@.", "@1.")
    out.write_text(unit.read_text().replace(INSTALLED, str(TIERPROXY)))
    return out


def _directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_every_daemon_has_a_unit() -> None:
    assert {u.name for u in UNITS} == {f"tierproxy-{d}.service" for d in RELOADABLE} | {"tierproxy-queue@.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_and_is_hardened(unit: Path, tmp_path: Path) -> None:
    tool = _analyze()
    assert TIERPROXY.exists(), TIERPROXY
    copy = _checked_copy(unit, tmp_path)
    verify = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # Other units on the machine may warn; nothing may be said about ours (unknown keys are only warnings).
    ours = [line for line in (verify.stdout + verify.stderr).splitlines() if copy.name in line or str(copy) in line]
    assert verify.returncode == 0 and ours == [], verify.stdout + verify.stderr
    security = subprocess.run([tool, "security", "--offline=true", f"--threshold={EXPOSURE_MAX}", str(copy)],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr
    assert re.search(r"Overall exposure level for \S+: [0-9.]+ OK", security.stdout), security.stdout[-500:]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_notifies_reloads_and_runs_a_real_command_line(unit: Path) -> None:
    d = _directives(unit)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["DynamicUser"] == ["yes"] and d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    [start] = d["ExecStart"]
    argv = shlex.split(start)
    assert argv[0] == INSTALLED
    daemon = argv[1]
    config = Path(argv[argv.index("--config") + 1])
    example = REPO / "deploy" / "config" / config.name
    assert example.exists(), f"{unit.name} runs {config}: deploy/config/{config.name} is its example"
    if daemon in RELOADABLE:
        assert d["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
        for line in d["ExecStartPre"] + d["ExecReload"][:-1]:  # the config checks, on the example
            pre = [str(example) if a == str(config) else a for a in shlex.split(line)]
            run = subprocess.run([sys.executable, "-m", "proxy.cli", *pre[1:]], capture_output=True, text=True,
                                 timeout=60, cwd=REPO)
            assert run.returncode == 0, run.stdout + run.stderr
    else:
        assert "ExecReload" not in d  # the queue worker has no SIGHUP handler: a HUP would kill it
        assert argv[1:3] == ["queue", "worker"]
        assert load_config(example, WorkerConfig).queues  # the worker's example config loads
    # The daemon's own argument parser accepts the command line (config swapped for the example).
    args = [str(example) if a == str(config) else a.replace("%H-%i", "host-1") for a in argv[1:]]
    probe = ("import sys; from proxy.cli import build_parser; "
             "a = build_parser().parse_args(sys.argv[1:]); print(a.config)")
    run = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0 and run.stdout.strip() == str(example), run.stdout + run.stderr
