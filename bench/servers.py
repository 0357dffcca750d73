"""Config files and launchers for the benchmark's backends and the proxies under test.

Every server gets a generated config in the run's temp dir, ports from `allocate_port` (held as
PortLocks until the stack closes), and is ready when an HTTP GET through it answers 200: never a
fixed sleep. `Stack` owns every process and lock it started and stops them all on close, so a
failed or interrupted run leaves nothing behind (ManagedProcess also kills children if we die).

The peers are configured to do the same work as tierproxy lb where they can: round robin over the
same two backends, keep-alive both ways with up to 64 idle upstream connections, X-Forwarded-For/
-Proto/-Host set, no access log, one worker process/thread (tierproxy is one asyncio process).
HAProxy also gets tierproxy's active HTTP health checks; nginx open source has none.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import realistic, tlspeers
from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.probes import http_probe
from proxy.devstack.process import ManagedProcess

__all__ = ["REPO", "Stack", "Target"]

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
# Idle keep-alive connections each proxy may keep per upstream (nginx `keepalive`, tierproxy
# `max_idle_per_backend`); 64 = wrk's connection count, so no proxy has to reconnect under load.
UPSTREAM_IDLE = 64
# nginx closes a keep-alive connection after 1000 requests by default (keepalive_requests since
# 1.19.10); a benchmark at tens of thousands of req/s would then measure reconnects.
KEEPALIVE_REQUESTS = 10_000_000

# Runs the balancer with the stdlib event loop: a None entry in sys.modules makes `import uvloop`
# raise ImportError, and proxy.core.runtime.new_event_loop then falls back to asyncio's loop.
_ASYNCIO_LOOP_BOOT = (
    "import sys; sys.modules['uvloop'] = None; "
    "from proxy.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Target:
    """One thing wrk can load: a proxy in front of the backends, or a backend itself."""

    name: str
    description: str
    port: int
    # Roots of the process trees whose CPU counts as "the proxy" (empty for the direct baseline).
    proxy_pids: list[int]
    processes: list[ManagedProcess] = field(default_factory=list)
    config_path: Path | None = None
    admin_port: int | None = None
    scheme: str = "http"  # https: the proxy terminates TLS (bench lb --tls / --h2)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}/"

    def alive(self) -> bool:
        return all(p.running for p in self.processes)


class Stack:
    """Starts servers into `workdir` and stops them all on close()."""

    def __init__(self, workdir: Path, nginx: str | None, haproxy: str | None) -> None:
        self.workdir = workdir
        self.nginx = nginx
        self.haproxy = haproxy
        self._locks: list[PortLock] = []
        self._processes: list[ManagedProcess] = []
        self.backend_ports: list[int] = []
        self.backend_kind = ""
        # Backends answer with bench/realistic.py's files (varying heads and sizes), not "ok".
        self.realistic = False
        # bench lb --tls/--h2: the proxies listen with TLS (this certificate), ALPN h2 + http/1.1.
        self.tls: tlspeers.TlsFiles | None = None

    # -- plumbing -----------------------------------------------------------------------------

    def _port(self) -> int:
        lock = allocate_port(HOST)
        self._locks.append(lock)
        return lock.port

    def _spawn(self, argv: list[str], name: str, probe_port: int, tls: bool = False,
               **kw: object) -> ManagedProcess:  # fmt: skip
        proc = ManagedProcess(argv, name=name, log_dir=self.workdir / "logs", **kw)  # type: ignore[arg-type]
        self._processes.append(proc)
        probe = tlspeers.https_probe(HOST, probe_port, self.tls.cert) if tls and self.tls \
            else http_probe(HOST, probe_port, "/")  # fmt: skip
        proc.wait_ready(probe, timeout=READY_TIMEOUT)  # type: ignore[arg-type]
        return proc

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def close(self) -> None:
        for proc in self._processes:
            proc.send_terminate()
        for proc in self._processes:
            proc.terminate()
        for lock in self._locks:
            lock.release()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backends(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self.backend_ports]

    # -- backends -----------------------------------------------------------------------------

    def start_backends(self, count: int = 2) -> list[Target]:
        """Tiny keep-alive backends: one nginx (1 worker) answering `return 200 "ok\\n"` on
        `count` ports, or one bench.backend process per port when nginx is not installed."""
        ports = [self._port() for _ in range(count)]
        self.backend_ports = ports
        if self.nginx is not None:
            self.backend_kind = "nginx"
            docroot = None
            if self.realistic:
                docroot = self.workdir / "docroot"
                realistic.write_docroot(docroot)
                self.backend_kind = "nginx (bench/realistic.py files)"
            proc = self._start_nginx("backends", _nginx_backend_conf(ports, docroot), ports[0])
            for port in ports[1:]:
                proc.wait_ready(http_probe(HOST, port, "/"), timeout=READY_TIMEOUT)
            desc = "one nginx, 1 worker, `return 200 \"ok\\n\"` on {}"
            return [Target(f"backend{i}", desc.format(f"{HOST}:{port}"), port, [], [proc])
                    for i, port in enumerate(ports, 1)]
        self.backend_kind = "bench.backend (Python; nginx not installed)"
        targets = []
        for i, port in enumerate(ports, 1):
            argv = [sys.executable, "-m", "bench.backend", str(port), "--host", HOST,
                    *(["--realistic"] if self.realistic else [])]
            proc = self._spawn(argv, f"backend{i}", port, cwd=REPO)
            desc = f"bench.backend (Python fallback, nginx missing) on {HOST}:{port}"
            targets.append(Target(f"backend{i}", desc, port, [], [proc]))
        return targets

    # -- proxies ------------------------------------------------------------------------------

    def start_tierproxy(self, name: str = "tierproxy", loop: str = "uvloop") -> Target:
        port, admin = self._port(), self._port()
        conf = self.workdir / f"{name}.toml"
        conf.write_text(_tierproxy_conf(port, admin, self.backends, self.tls))
        if loop == "uvloop":
            argv = [sys.executable, "-m", "proxy.cli", "lb", "--config", str(conf), "--json-logs"]
        else:
            argv = [sys.executable, "-c", _ASYNCIO_LOOP_BOOT, "lb", "--config", str(conf), "--json-logs"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = self._spawn(argv, name, port, tls=True, cwd=REPO, env=env)
        desc = (f"tierproxy lb ({loop} loop): round_robin, HTTP health checks, metrics, "
                f"X-Forwarded-*, log_level warning" + (", TLS + ALPN h2" if self.tls else ""))
        return Target(name, desc, port, [proc.pid], [proc], conf, admin, self.scheme)

    def start_nginx_proxy(self) -> Target:
        assert self.nginx is not None
        port = self._port()
        listen = None
        if self.tls:
            listen = tlspeers.nginx_listen(HOST, port, self.tls, tlspeers.nginx_http2_on(self.nginx))
        proc = self._start_nginx("nginx", _nginx_proxy_conf(port, self.backends, listen), port, tls=True)
        desc = ("nginx reverse proxy: 1 worker, upstream keepalive 64, proxy_http_version 1.1"
                + (", ssl + http2" if self.tls else ""))
        return Target("nginx", desc, port, [proc.pid], [proc], self.workdir / "nginx" / "nginx.conf",
                      scheme=self.scheme)  # fmt: skip

    def start_haproxy(self) -> Target:
        assert self.haproxy is not None
        port = self._port()
        conf = self.workdir / "haproxy.cfg"
        conf.write_text(_haproxy_conf(port, self.backends, self.tls))
        proc = self._spawn([self.haproxy, "-f", str(conf), "-db"], "haproxy", port, tls=True)
        desc = ("HAProxy: nbthread 1, mode http, http-reuse always, roundrobin, HTTP checks"
                + (", ssl crt + alpn h2,http/1.1" if self.tls else ""))
        return Target("haproxy", desc, port, [proc.pid], [proc], conf, scheme=self.scheme)

    def _start_nginx(self, name: str, http_block: str, port: int, tls: bool = False) -> ManagedProcess:
        assert self.nginx is not None
        prefix = self.workdir / name
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(_nginx_main_conf(prefix) + http_block)
        # -e: the startup error log too must not go to /var/log/nginx (not writable for non-root).
        argv = [self.nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
                "-g", "daemon off;"]
        return self._spawn(argv, name, port, tls=tls)


# -- config text --------------------------------------------------------------------------------


def _nginx_main_conf(prefix: Path) -> str:
    # As root, nginx would switch its worker to `nobody`; keep it root so it can reach the temp
    # dir. As another user the directive only draws a warning, so it is left out.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"# Generated by bench/servers.py.\n{user}"
        f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events {\n    worker_connections 4096;\n}\n"
        "http {\n    access_log off;\n"
        f"    keepalive_requests {KEEPALIVE_REQUESTS};\n    keepalive_timeout 65s;\n{temps}"
    )


def _nginx_backend_conf(ports: list[int], docroot: Path | None = None) -> str:
    locations = ('        location / {\n            return 200 "ok\\n";\n        }\n' if docroot is None
                 else realistic.nginx_locations(docroot))  # fmt: skip
    servers = "".join(
        "    server {\n"
        f"        listen {HOST}:{port} backlog=1024;\n"
        "        default_type text/plain;\n"
        f"{locations}"
        "    }\n"
        for port in ports
    )
    return servers + "}\n"


def _nginx_proxy_conf(port: int, backends: list[str], listen: str | None = None) -> str:
    servers = "".join(f"        server {b};\n" for b in backends)
    return (
        f"    upstream backends {{\n{servers}"
        f"        keepalive {UPSTREAM_IDLE};\n"
        f"        keepalive_requests {KEEPALIVE_REQUESTS};\n    }}\n"
        "    server {\n"
        + (listen or f"        listen {HOST}:{port} backlog=1024;\n")
        + "        location / {\n"
        "            proxy_pass http://backends;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $http_host;\n"
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "            proxy_set_header X-Forwarded-Proto $scheme;\n"
        "            proxy_set_header X-Forwarded-Host $host;\n"
        "        }\n"
        "    }\n}\n"
    )


def _haproxy_conf(port: int, backends: list[str], tls: tlspeers.TlsFiles | None = None) -> str:
    servers = "".join(
        f"    server b{i} {b} check inter 2s fall 3 rise 2\n" for i, b in enumerate(backends, 1)
    )
    return (
        "# Generated by bench/servers.py.\n"
        "global\n    nbthread 1\n    maxconn 4096\n\n"
        "defaults\n    mode http\n    timeout connect 3s\n    timeout client 60s\n"
        "    timeout server 30s\n    timeout http-keep-alive 60s\n"
        "    option http-keep-alive\n    http-reuse always\n\n"
        f"frontend fe\n    bind {tlspeers.haproxy_bind(HOST, port, tls) if tls else f'{HOST}:{port}'}\n"
        "    option forwardfor\n"
        f"    http-request set-header X-Forwarded-Proto {'https' if tls else 'http'}\n"
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]\n"
        "    default_backend be\n\n"
        "backend be\n    balance roundrobin\n    option httpchk GET /\n"
        f"{servers}"
    )


def _tierproxy_conf(port: int, admin: int, backends: list[str], tls: tlspeers.TlsFiles | None = None) -> str:
    servers = "".join(
        f'[[pools.bench.backends]]\nname = "b{i}"\naddress = "{b}"\n\n'
        for i, b in enumerate(backends, 1)
    )
    return (
        "# Generated by bench/servers.py.\n"
        + (f'listen = "{HOST}:{port}"\n' if tls is None else "")
        + 'log_level = "warning"\n\n'
        f'[admin]\naddress = "{HOST}:{admin}"\n\n'
        f"[limits]\nmax_idle_per_backend = {UPSTREAM_IDLE}\n\n"
        '[pools.bench]\nalgorithm = "round_robin"\nmode = "stateless"\nretries = 2\n\n'
        '[pools.bench.health]\ntype = "http"\npath = "/"\ninterval = 2.0\ntimeout = 1.0\n'
        "rise = 2\nfall = 3\n\n"
        f"{servers}"
        + (tlspeers.tierproxy_listener(HOST, port, tls) if tls else "")
    )
