"""Write deploy/k8s/*.yaml: the tierproxy stack on Kubernetes, from the specs below.

    python scripts/k8s_manifests.py          # rewrite the files
    python scripts/k8s_manifests.py --check  # exit 1 if a committed file differs (a test runs it)

Each tierproxy workload gets the same hardening (non-root uid 10001, read-only root filesystem, no
privilege escalation, every capability dropped, the runtime's seccomp profile), resource requests
and limits, readiness and liveness probes on its admin port, a PodDisruptionBudget and a Service.
The configs live in one ConfigMap (deploy/k8s/config/*.toml, mounted at /etc/tierproxy).
tests/integration/test_deploy_k8s.py validates the output against the Kubernetes schemas
(kubernetes-validate --strict) and loads every config with tierproxy's own checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
NS = "tierproxy"
IMAGE = "tierproxy:0.1.0"  # built from deploy/compose/Dockerfile; push it where the cluster pulls from
LABEL = "app.kubernetes.io/name"

SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def meta(name: str, **extra: object) -> dict:
    return {"name": name, "namespace": NS, "labels": {LABEL: name, "app.kubernetes.io/part-of": "tierproxy"}, **extra}


def http_probe(port: int, path: str = "/healthz", period: int = 10, failures: int = 3) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


def exec_probe(url: str, period: int = 10, failures: int = 3) -> dict:
    # Admin ports beyond loopback are TLS with a token even for reads: an httpGet probe cannot
    # send the token, so the image's health check (proxy/core/healthcheck.py) reads it from the Secret.
    return {"exec": {"command": ["python", "-m", "proxy.core.healthcheck", url]}, "periodSeconds": period,
            "timeoutSeconds": 3, "failureThreshold": failures}


# name -> what differs between the workloads
WORKLOADS: dict[str, dict] = {
    "lb": {"args": ["lb", "--config", "/etc/tierproxy/lb.toml"], "replicas": 2, "admin": 9080,
           "ports": [("http", 8080, "TCP")], "cpu": "500m", "memory": "256Mi",
           "probe": exec_probe("https://127.0.0.1:9080/healthz"), "secret": True,
           "env": {"TIERPROXY_HEALTH_TOKEN_FILE": "/secrets/admin.token"},
           "service": {"type": "LoadBalancer", "ports": [("http", 80, 8080, "TCP")]}},
    "cdn": {"args": ["cdn", "--config", "/etc/tierproxy/cdn.toml"], "replicas": 2, "admin": 9088,
            "ports": [("http", 8088, "TCP")], "cpu": "500m", "memory": "512Mi",
            "probe": exec_probe("https://127.0.0.1:9088/healthz"), "secret": True,
            "env": {"TIERPROXY_HEALTH_TOKEN_FILE": "/secrets/admin.token"},
            "service": {"ports": [("http", 80, 8088, "TCP")]}},
    "geodns": {"args": ["geodns", "--config", "/etc/tierproxy/geodns.toml"], "replicas": 2, "admin": 9053,
               "ports": [("dns-udp", 5353, "UDP"), ("dns-tcp", 5353, "TCP")], "cpu": "250m", "memory": "128Mi",
               "probe": exec_probe("https://127.0.0.1:9053/healthz"), "secret": True,
               "env": {"TIERPROXY_HEALTH_TOKEN_FILE": "/secrets/admin.token"},
               "service": {"type": "LoadBalancer", "ports": [("dns-udp", 53, 5353, "UDP"), ("dns-tcp", 53, 5353, "TCP")]}},
    "dbproxy": {"args": ["dbproxy", "--config", "/etc/tierproxy/dbproxy.toml"], "replicas": 2, "admin": 9187,
                "ports": [("postgres", 6432, "TCP")], "cpu": "500m", "memory": "256Mi",
                "probe": exec_probe("https://127.0.0.1:9187/healthz"), "secret": True,
                "env": {"TIERPROXY_HEALTH_TOKEN_FILE": "/secrets/admin.token"},
                "service": {"ports": [("postgres", 6432, 6432, "TCP"), ("admin", 9187, 9187, "TCP")]}},
    "shard": {"args": ["shard", "--config", "/etc/tierproxy/shard.toml"], "replicas": 2, "admin": 9188,
              "ports": [("postgres", 6433, "TCP")], "cpu": "500m", "memory": "256Mi",
              "probe": exec_probe("https://127.0.0.1:9188/healthz"), "secret": True,
              "env": {"TIERPROXY_HEALTH_TOKEN_FILE": "/secrets/admin.token"},
              "service": {"ports": [("postgres", 6433, 6433, "TCP")]}},
    "queue-worker": {"args": ["queue", "worker", "--config", "/etc/tierproxy/queue.toml"], "replicas": 2,
                     "admin": 9400, "ports": [], "cpu": "500m", "memory": "256Mi",
                     "probe": http_probe(9400, "/metrics"), "secret": True,  # the dbproxy's admin token and cert
                     "env_from_secret": {"TIERPROXY_NOTES_DATABASE_URL": ("tierproxy-app", "notes-database-url")}},
}


def _container(name: str, spec: dict) -> dict:
    probe = spec.get("probe") or http_probe(spec["admin"])
    mounts = [{"name": "config", "mountPath": "/etc/tierproxy", "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if spec.get("secret"):
        mounts.append({"name": "admin", "mountPath": "/secrets", "readOnly": True})
    env = [{"name": k, "value": v} for k, v in spec.get("env", {}).items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": s, "key": key}}}
            for k, (s, key) in spec.get("env_from_secret", {}).items()]
    c: dict = {
        "name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent", "args": spec["args"],
        "ports": [{"name": "admin", "containerPort": spec["admin"], "protocol": "TCP"}]
        + [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in spec["ports"]],
        "readinessProbe": probe, "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 6},
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "resources": {"requests": {"cpu": spec["cpu"], "memory": spec["memory"]},
                      "limits": {"memory": spec["memory"]}},
        "securityContext": SECURITY, "volumeMounts": mounts,
    }
    if env:
        c["env"] = env
    return c


def workload(name: str, spec: dict) -> list[dict]:
    volumes = [{"name": "config", "configMap": {"name": "tierproxy-config"}},
               {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    if spec.get("secret"):
        volumes.append({"name": "admin", "secret": {"secretName": "tierproxy-admin", "defaultMode": 0o440}})
    pod = {"metadata": {"labels": {LABEL: name, "app.kubernetes.io/part-of": "tierproxy"},
                        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec["admin"]),
                                        "prometheus.io/path": "/metrics"}},
           "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 45,
                    "containers": [_container(name, spec)], "volumes": volumes}}
    if spec.get("probe", {}).get("exec"):  # an admin port beyond loopback is TLS (the exec probe's https)
        pod["metadata"]["annotations"]["prometheus.io/scheme"] = "https"
    docs = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
             "spec": {"replicas": spec["replicas"], "selector": {"matchLabels": {LABEL: name}},
                      "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                      "template": pod}},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
             "spec": {"minAvailable": 1, "selector": {"matchLabels": {LABEL: name}}}}]
    svc = spec.get("service")
    if svc:
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
                     "spec": {"type": svc.get("type", "ClusterIP"), "selector": {LABEL: name},
                              "ports": [{"name": n, "port": p, "targetPort": t, "protocol": proto}
                                        for n, p, t, proto in svc["ports"]]}})
    return docs


def web() -> list[dict]:
    """The demo web app: a StatefulSet only for its stable pod names (web-0.web, web-1.web), which
    the lb's config lists as backends (the lb balances itself: a ClusterIP would do it twice)."""
    name = "web"
    c = {"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
         "command": ["python", "-m", "workers.web"],
         "args": ["--host", "0.0.0.0", "--port", "8001", "--name", "$(POD_NAME)", "--sessions",
                  "redis://redis-0.redis:6379/0", "--database-url", "$(DATABASE_URL)",
                  "--queue-redis", "redis://redis-0.redis:6379/1"],
         "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "tierproxy-app",
                                                                         "key": "notes-database-url"}}}],
         "ports": [{"name": "http", "containerPort": 8001, "protocol": "TCP"}],
         "readinessProbe": http_probe(8001), "livenessProbe": {**http_probe(8001), "periodSeconds": 20},
         "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
         "securityContext": SECURITY, "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    pod = {"metadata": {"labels": {LABEL: name, "app.kubernetes.io/part-of": "tierproxy"}},
           "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False, "containers": [c],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]}}
    return [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(name),
         "spec": {"serviceName": name, "replicas": 2, "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": {LABEL: name}}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
         "spec": {"clusterIP": "None", "selector": {LABEL: name},
                  "ports": [{"name": "http", "port": 8001, "targetPort": 8001, "protocol": "TCP"}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {LABEL: name}}}},
    ]


def redis() -> list[dict]:
    """Redis (sessions and the job queue) where its state lives: a StatefulSet with a volume and the
    append-only file fsynced on every write (what the queue's no-loss promise needs)."""
    name = "redis"
    c = {"name": name, "image": "redis:7.2-alpine", "imagePullPolicy": "IfNotPresent",
         "args": ["redis-server", "--appendonly", "yes", "--appendfsync", "always", "--dir", "/data"],
         "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
         "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
         "livenessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 20},
         "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
         "securityContext": {**SECURITY, "runAsUser": 999, "runAsGroup": 999},
         "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    return [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(name),
         "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": {LABEL: name}},
                  "template": {"metadata": {"labels": {LABEL: name, "app.kubernetes.io/part-of": "tierproxy"}},
                               "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 999, "fsGroup": 999,
                                                            "seccompProfile": {"type": "RuntimeDefault"}},
                                        "automountServiceAccountToken": False, "containers": [c]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "10Gi"}}}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
         "spec": {"clusterIP": "None", "selector": {LABEL: name},
                  "ports": [{"name": "redis", "port": 6379, "targetPort": 6379, "protocol": "TCP"}]}},
    ]


def databases() -> list[dict]:
    """PostgreSQL is not run here: point these names at your primary and replica (a Patroni cluster,
    an operator's services, a managed database)."""
    return [{"apiVersion": "v1", "kind": "Service", "metadata": meta(n),
             "spec": {"type": "ExternalName", "externalName": f"{n}.db.example.internal"}}
            for n in ("pg-primary", "pg-replica", "shard0", "shard1")]


def configmap() -> dict:
    files = {p.name: p.read_text() for p in sorted((ROOT / "config").glob("*.toml"))}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("tierproxy-config"), "data": files}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:  # no &id001 anchors: people read these files
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> dict[str, str]:
    head = "# Generated by scripts/k8s_manifests.py: edit it there (docs/deploy.md).\n"
    files = {
        "00-namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}],
        "10-config.yaml": [configmap()],
        "20-redis.yaml": redis(),
        "20-databases.yaml": databases(),
        "30-web.yaml": web(),
        **{f"40-{name}.yaml": workload(name, spec) for name, spec in WORKLOADS.items()},
    }
    return {name: head + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=120) for name, docs in files.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (ROOT / n).exists() or (ROOT / n).read_text() != text]
        extra = sorted(p.name for p in ROOT.glob("*.yaml") if p.name not in files)
        for n in stale + extra:
            print(f"deploy/k8s/{n} is not what scripts/k8s_manifests.py writes", file=sys.stderr)
        return 1 if stale or extra else 0
    for name, text in files.items():
        (ROOT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
