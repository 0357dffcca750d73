"""deploy/k8s/: the manifests are what scripts/k8s_manifests.py writes, they pass
`kubernetes-validate --strict` (the Kubernetes 1.30 schemas, bundled with the package: no cluster
needed), every workload is hardened, probed and budgeted, and every config in the ConfigMap loads
with tierproxy's own checks. No cluster here: nothing was applied (docs/deploy.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.cli import build_parser
from proxy.core.config import load_config
from workers.queue.config import WorkerConfig

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.yaml"))
KUBERNETES = "1.30.0"
DAEMONS = {"lb", "cdn", "geodns", "dbproxy", "shard", "queue-worker"}


def _docs() -> list[dict]:
    return [d for f in FILES for d in yaml.safe_load_all(f.read_text()) if d]


def _validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (PyPI, in the test extra; scripts/dev.sh setup installs it)")
    return subprocess.run([tool, "--strict", "-k", KUBERNETES, *map(str, paths)], capture_output=True, text=True,
                          timeout=300)


def test_manifests_are_generated() -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "k8s_manifests.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_manifests_pass_the_kubernetes_schemas(tmp_path: Path) -> None:
    run = _validate(*FILES)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" passed for resource ") == len(_docs())
    # The validator does reject what the API server would: a misspelt field, a string for a number.
    bad = tmp_path / "bad.yaml"
    doc = next(d for d in _docs() if d["kind"] == "Deployment")
    doc["spec"]["replicaz"] = 2
    bad.write_text(yaml.safe_dump(doc))
    assert _validate(bad).returncode != 0


def test_every_workload_is_hardened_probed_and_budgeted() -> None:
    docs = _docs()
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    assert DAEMONS <= set(workloads) and {"web", "redis"} <= set(workloads)
    assert workloads["redis"]["kind"] == "StatefulSet" and workloads["redis"]["spec"]["volumeClaimTemplates"]
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    for name, w in workloads.items():
        pod = w["spec"]["template"]
        assert pod["metadata"]["labels"].items() >= w["spec"]["selector"]["matchLabels"].items(), name
        for c in pod["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["readinessProbe"] and c["livenessProbe"] and c["resources"]["requests"], name
        if name in DAEMONS:
            assert pdbs[name]["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
            [c] = pod["spec"]["containers"]
            admin = next(p["containerPort"] for p in c["ports"] if p["name"] == "admin")
            probe = c["readinessProbe"]
            # on the admin port: by httpGet, or (the lb: TLS and a token) the image's health check
            assert probe.get("httpGet", {}).get("port") == admin or f"127.0.0.1:{admin}/" in " ".join(
                probe["exec"]["command"]), name
            args = build_parser().parse_args(c["args"])
            assert args.config.startswith("/etc/tierproxy/"), name


def test_every_config_in_the_configmap_loads(tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lb",
                    "-keyout", str(tmp_path / "admin.key"), "-out", str(tmp_path / "admin.crt")], check=True,
                   capture_output=True)
    (tmp_path / "admin.token").write_text("0123456789abcdef\n")
    [cm] = [d for d in _docs() if d["kind"] == "ConfigMap"]
    used = {Path(a).name for d in _docs() if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] for a in c["args"] if a.endswith(".toml")}
    assert used <= set(cm["data"])
    for name, text in cm["data"].items():
        path = tmp_path / name
        path.write_text(text.replace("/secrets/", f"{tmp_path}/"))
        if name == "queue.toml":
            assert load_config(path, WorkerConfig).queues
            continue
        run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", "--daemon", path.stem, str(path)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
