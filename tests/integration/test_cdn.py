"""`tierproxy cdn` end to end: the daemon as a real process, a real aiohttp origin process
(tests/integration/cdnorigin.py) that counts what reaches it, and real curl as the client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.lbproc import http_json, wait_for

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Origin:
    def __init__(self, tmp_path: Path) -> None:
        self.lock = allocate_port()
        self.port = self.lock.port
        self.log = open(tmp_path / "origin.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Origin:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.cdnorigin", str(self.port)],
                                     cwd=REPO, env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._up(), 20, "the origin to answer")
        return self

    def _up(self) -> bool:
        try:
            return http_json(f"http://127.0.0.1:{self.port}/_count?path=/", timeout=1)[0] == 200
        except OSError:
            return False

    def count(self, path: str) -> dict:
        return http_json(f"http://127.0.0.1:{self.port}/_count?path={path}")[1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Cdn:
    def __init__(self, tmp_path: Path, origin: Origin | None, cache: str = "", origin_toml: str = "",
                 top: str = "") -> None:
        """`origin_toml`: the origin pool's tables ([origin], [[origin.servers]]) instead of
        `origins = [origin]`; given last in the file, after [cache]. `top`: more top-level keys."""
        self.lock, self.admin_lock = allocate_port(), allocate_port()
        self.port, self.admin_port = self.lock.port, self.admin_lock.port
        self.config = tmp_path / "cdn.toml"
        origins = f'origins = ["127.0.0.1:{origin.port}"]\n' if origin is not None else ""
        self.config.write_text(f'listen = "127.0.0.1:{self.port}"\n{origins}'
                               f'admin = {{ address = "127.0.0.1:{self.admin_port}" }}\n'
                               f"origin_connect_timeout = 1.0\n{top}\n[cache]\n{cache}\n{origin_toml}\n")
        self.log_path = tmp_path / "cdn.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "cdn", "--config", str(self.config),
                                      "--json-logs"], cwd=REPO, env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, 20, "tierproxy cdn to answer its admin port")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(self.log_path.read_text())
        try:
            return http_json(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def status(self) -> dict:
        return http_json(f"http://127.0.0.1:{self.admin_port}/status")[1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def curl(cdn: Cdn, path: str, *args: str) -> tuple[int, dict[str, str], str]:
    """One request with real curl; (status, headers lowercased, body)."""
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "20", *args, f"http://127.0.0.1:{cdn.port}{path}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def origin(tmp_path):
    o = Origin(tmp_path).start()
    yield o
    o.stop()
    o.lock.release()


@pytest.fixture
def cdn(tmp_path, origin):
    c = Cdn(tmp_path, origin)
    yield c
    assert c.stop() == 0
    c.lock.release()
    c.admin_lock.release()


def test_miss_then_hit_then_head_from_the_cached_get(cdn, origin):
    path = "/obj/a?cc=max-age=300"
    s1, h1, b1 = curl(cdn, path)
    s2, h2, b2 = curl(cdn, path)
    s3, h3, b3 = curl(cdn, path, "-I")
    assert (s1, s2, s3) == (200, 200, 200)
    assert h1["cache-status"].startswith("tierproxy; fwd=uri-miss; fwd-status=200; ttl=")
    assert h2["cache-status"].startswith("tierproxy; hit; ttl=") and "age" in h2
    assert b1 == b2 == "/obj/a #1"
    assert h3["content-length"] == str(len(b1)) and b3 == "" and "hit" in h3["cache-status"]
    assert origin.count("/obj/a")["requests"] == 1


def test_range_from_the_stored_object(cdn, origin):
    path = "/obj/rg?cc=max-age=300&size=1000"
    status, headers, body = curl(cdn, path, "-H", "Range: bytes=0-9")
    assert status == 206 and headers["content-range"] == "bytes 0-9/1000" and body == "/obj/rg #1"
    status, headers, body = curl(cdn, path, "-H", "Range: bytes=-3")
    assert status == 206 and headers["content-range"] == "bytes 997-999/1000" and body == "..."
    status, headers, _ = curl(cdn, path, "-H", "Range: bytes=1000-")
    assert status == 416 and headers["content-range"] == "bytes */1000"
    assert origin.count("/obj/rg")["requests"] == 1


def test_set_cookie_is_not_cached(cdn, origin):
    for _ in range(2):
        status, headers, _ = curl(cdn, "/obj/c?cc=max-age=300&cookie=1")
        assert status == 200 and headers["set-cookie"] == "session=abc"
        assert 'detail="set-cookie"' in headers["cache-status"]
    assert origin.count("/obj/c")["requests"] == 2


def test_no_store_is_never_stored(cdn, origin):
    for _ in range(3):
        assert 'detail="no-store"' in curl(cdn, "/obj/n?cc=no-store")[1]["cache-status"]
    assert origin.count("/obj/n")["requests"] == 3
    assert cdn.status()["objects"] == 0


def test_authorization_not_stored_unless_public(cdn, origin):
    for _ in range(2):
        curl(cdn, "/obj/auth?cc=max-age=300", "-H", "Authorization: Bearer x")
    assert origin.count("/obj/auth")["requests"] == 2
    for _ in range(2):
        curl(cdn, "/obj/pub?cc=public,max-age=300", "-H", "Authorization: Bearer x")
    assert origin.count("/obj/pub")["requests"] == 1


def test_vary_is_respected(cdn, origin):
    path = "/obj/v?cc=max-age=300&vary=Accept-Language"
    _, h_en, en = curl(cdn, path, "-H", "Accept-Language: en")
    _, h_fr, fr = curl(cdn, path, "-H", "Accept-Language: fr")
    _, h_en2, en2 = curl(cdn, path, "-H", "Accept-Language: en")
    assert en.endswith("Accept-Language=en") and fr.endswith("Accept-Language=fr") and en2 == en
    assert "fwd=vary-miss" in h_fr["cache-status"] and "hit" in h_en2["cache-status"]
    assert origin.count("/obj/v")["requests"] == 2


def test_304_revalidation(cdn, origin):
    path = "/obj/r?cc=max-age=0&etag=v1"
    _, _, first = curl(cdn, path)
    status, headers, body = curl(cdn, path)
    assert status == 200 and body == first
    assert "fwd=stale; fwd-status=304" in headers["cache-status"]
    assert origin.count("/obj/r") == {"requests": 2, "not_modified": 1}
    # The client's own validator is answered by the cdn from the stored object.
    status, _, body = curl(cdn, path, "-H", 'If-None-Match: "v1"')
    assert status == 304 and body == ""


def test_100_concurrent_misses_one_origin_request(cdn, origin):
    url = f"http://127.0.0.1:{cdn.port}/obj/hot?cc=max-age=300&delay=1"
    out = subprocess.run(["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", "100",
                          "--max-time", "30", "-w", "%{http_code}\n", *["-o", "/dev/null", url] * 100],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["200"] * 100, out.stderr
    assert origin.count("/obj/hot")["requests"] == 1
    assert cdn.status()["coalesced"] == 99


def test_memory_stays_under_the_bound(tmp_path, origin):
    cdn = Cdn(tmp_path, origin, cache="max_bytes = 1048576\nmax_object_bytes = 262144")
    try:
        size = 50_000
        for i in range(10 * 1048576 // size + 1):  # 10x the bound in distinct objects
            status, _, body = curl(cdn, f"/obj/m{i}?cc=max-age=300&size={size}")
            assert status == 200 and len(body) == size
            st = cdn.status()
            assert st["bytes"] <= st["max_bytes"] == 1048576
        assert st["evictions"] > 150 and st["objects"] >= 15
    finally:
        assert cdn.stop() == 0


def test_origin_killed_stale_served_and_uncached_get_502(cdn, origin):
    path = "/obj/s?cc=max-age=0&etag=x"
    curl(cdn, path)
    origin.stop()
    status, headers, body = curl(cdn, path)
    assert status == 200 and body == "/obj/s #1"
    assert headers["cache-status"].startswith("tierproxy; fwd=stale") and 'detail="origin-unreachable"' in headers["cache-status"]
    status, headers, _ = curl(cdn, "/obj/never?cc=max-age=60")
    assert status == 502 and "fwd=uri-miss" in headers["cache-status"]
    assert cdn.status()["stale_served"] == 1


def test_purge_from_admin_only(cdn, origin):
    path = "/obj/p?cc=max-age=300"
    curl(cdn, path)
    status, _, _ = curl(cdn, path, "-X", "PURGE")
    assert status == 403
    assert "hit" in curl(cdn, path)[1]["cache-status"]
    url = f"http://127.0.0.1:{cdn.port}/obj/p?cc=max-age%3D300"
    code, body = http_json(f"http://127.0.0.1:{cdn.admin_port}/purge?url=" + url.replace("?", "%3F").replace("&", "%26"), "POST")
    assert code == 200 and body["purged"] == 1
    # From a browser page elsewhere (CSRF), or under a foreign Host name (DNS rebinding): refused.
    purge = f"http://127.0.0.1:{cdn.admin_port}/purge?url=http://x/obj/p"
    for extra in (["-H", "Origin: http://evil.example", "-H", "Content-Type: application/json"],
                  ["-H", "Host: evil.example", "-H", "Content-Type: application/json"]):
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", *extra, purge],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "403"
    assert "fwd=uri-miss" in curl(cdn, path)[1]["cache-status"]
    assert origin.count("/obj/p")["requests"] == 2


def test_metrics_and_check_config(cdn, origin, tmp_path):
    curl(cdn, "/obj/x?cc=max-age=60")
    curl(cdn, "/obj/x?cc=max-age=60")
    out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{cdn.admin_port}/metrics"], capture_output=True, text=True)
    assert "tierproxy_cdn_hits_total 1.0" in out.stdout and "tierproxy_cdn_misses_total 1.0" in out.stdout
    assert 'tierproxy_cdn_evictions_total{policy="lru"} 0.0' in out.stdout
    bad = tmp_path / "cdn-bad.toml"
    bad.write_text('origins = ["127.0.0.1:1"]\n[cache]\npolicy = "random"\n')
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)], cwd=REPO, env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cache.policy" in r.stderr
    # SIGHUP reload keeps serving and counts.
    cdn.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: cdn.status()["reloads"] == 1, 10, "the reload")
    assert "hit" in curl(cdn, "/obj/x?cc=max-age=60")[1]["cache-status"]
