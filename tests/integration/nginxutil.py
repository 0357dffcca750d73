"""A real nginx as a backend for the balancer's PROXY protocol and TLS-to-backend tests: one
server block given by the test, readiness polled on its port, stopped at teardown."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from proxy.devstack.poll import wait_until

__all__ = ["Nginx", "nginx_or_skip"]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def nginx_or_skip() -> str:
    import pytest

    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    return NGINX


class Nginx:
    def __init__(self, prefix: Path, port: int, server_block: str) -> None:
        self.prefix = prefix
        self.port = port
        prefix.mkdir(parents=True, exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {k}_temp_path {prefix}/{k}_temp;\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
            "events {\n    worker_connections 256;\n}\n"
            f"http {{\n    access_log off;\n{temps}    server {{\n        listen 127.0.0.1:{port}{server_block}\n    }}\n}}\n"
        )
        self.proc = subprocess.Popen(
            [nginx_or_skip(), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + (prefix / "error.log").read_text(errors="replace"))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, 15, "nginx to listen")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
