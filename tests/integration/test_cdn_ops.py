"""`tierproxy cdn` operations end to end: recording a key trace (config and admin API) and
replaying it with `tierproxy cdn whatif`; the admin HTML page as headless Chromium renders it;
evictions counted by policy across reloads. A real origin process (cdnorigin.py), the daemon as
a real process, real curl; one origin and one cdn for the module."""

from __future__ import annotations

import html
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests.integration import cdnproc
from tests.integration.lbproc import http_json, wait_for
from tests.integration.test_cdn import REPO, curl

origin = cdnproc.origin


@pytest.fixture(scope="module")
def cdn(tmp_path_factory, origin):
    tmp = tmp_path_factory.mktemp("cdn")
    with cdnproc.running_cdn(tmp, origin, cache=f'policy = "wtinylfu"\ntrace_file = "{tmp / "boot.trace"}"') as c:
        c.tmp = tmp
        yield c


def trace_lines(path) -> list[str]:
    return [line for line in path.read_text(encoding="latin-1").splitlines() if not line.startswith("#")]


def test_recorded_trace_replays_in_whatif(cdn, origin):
    boot = cdn.tmp / "boot.trace"
    assert cdn.status()["trace"] == {"file": str(boot), "records": 0}
    # miss, hit, hit on one object; a miss on another; an uncacheable answer is not recorded.
    for path in ("/obj/t1?cc=max-age=300", "/obj/t1?cc=max-age=300", "/obj/t1?cc=max-age=300",
                 "/obj/t2?cc=max-age=300&size=5000", "/obj/t3?cc=no-store"):
        assert curl(cdn, path)[0] == 200
    assert cdn.status()["trace"]["records"] == 4
    # The recorder flushes once a second: poll the file, no fixed sleep.
    lines = wait_for(lambda: ls if len(ls := trace_lines(boot)) == 4 else None, 10, "the trace on disk")
    keys = [line.split("\t")[1] for line in lines]
    assert keys == [f"127.0.0.1:{cdn.port} /obj/t1?cc=max-age=300"] * 3 + [f"127.0.0.1:{cdn.port} /obj/t2?cc=max-age=300&size=5000"]
    sizes = [int(line.split("\t")[0]) for line in lines]
    assert sizes[0] == sizes[1] == sizes[2] and sizes[3] > 5000
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "cdn", "whatif", "--trace", str(boot), "--size", "1MiB"],
                         check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[2:6]}
    # 4 lookups, the 2nd and 3rd hits whatever the policy: 0.5; byte hit ratio 2 x t1 / all.
    byte_ratio = 2 * sizes[0] / sum(sizes)
    for policy in ("lru", "lfu", "fifo", "wtinylfu"):
        assert rows[policy][0] == "0.5000" and rows[policy][1] == f"{byte_ratio:.4f}", out.stdout


def test_admin_starts_and_stops_a_recording(cdn, origin):
    admin = f"http://127.0.0.1:{cdn.admin_port}"
    path = cdn.tmp / "admin.trace"
    code, body = http_json(f"{admin}/trace?action=start&file={path}", "POST")
    assert code == 200 and body == {"recording": str(path)}
    curl(cdn, "/obj/a1?cc=max-age=300")
    curl(cdn, "/obj/a1?cc=max-age=300")
    code, body = http_json(f"{admin}/trace?action=stop", "POST")
    assert code == 200 and body["stopped"] is True and body["records"] == 2
    assert len(trace_lines(path)) == 2  # closed: everything is on disk
    assert cdn.status()["trace"] is None
    curl(cdn, "/obj/a1?cc=max-age=300")
    assert len(trace_lines(path)) == 2
    # An existing file is not overwritten; bad requests get 400; a browser page cannot start one.
    assert http_json(f"{admin}/trace?action=start&file={path}", "POST")[0] == 409
    assert http_json(f"{admin}/trace?action=start", "POST")[0] == 400
    assert http_json(f"{admin}/trace?action=start&file={cdn.tmp}/no/such/dir/x", "POST")[0] == 400
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "-H", "Origin: http://evil.example", "-H", "Content-Type: application/json",
                          f"{admin}/trace?action=start&file={cdn.tmp}/evil.trace"],
                         check=False, capture_output=True, text=True, timeout=30)
    assert out.stdout == "403" and not (cdn.tmp / "evil.trace").exists()


def chromium_dom(url: str, tmp_path, *extra: str) -> str:
    """The DOM headless Chromium builds for `url` (after its subresources load)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'chromium'}", *extra, "--dump-dom", url],
                         check=False, capture_output=True, text=True, timeout=120)
    assert "</html>" in run.stdout, run.stderr[-2000:]
    return run.stdout


def figure(dom: str, ident: str) -> str:
    m = re.search(rf'id="{ident}"[^>]*>([^<]*)<', dom)
    assert m is not None, (ident, dom[:2000])
    return m.group(1)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(name)


def test_admin_page_in_headless_chromium_shows_the_figures(cdn, origin, tmp_path):
    for _ in range(8):  # 1 miss + 7 hits: the most answered object of this module
        curl(cdn, "/obj/popular?cc=max-age=300&size=2000")
    code, status = http_json(f"http://127.0.0.1:{cdn.admin_port}/status")
    top = status["top_urls"][0]
    assert top["url"] == f"http://127.0.0.1:{cdn.port}/obj/popular?cc=max-age=300&size=2000" and top["hits"] == 7
    code, metrics = http_json(f"http://127.0.0.1:{cdn.admin_port}/metrics")
    hits, misses = metric(metrics, "tierproxy_cdn_hits_total"), metric(metrics, "tierproxy_cdn_misses_total")
    objects, size = metric(metrics, "tierproxy_cdn_objects"), metric(metrics, "tierproxy_cdn_bytes")
    assert "tierproxy_cdn_evictions_total{policy=\"wtinylfu\"}" in metrics
    assert metric(metrics, "tierproxy_cdn_origin_latency_seconds_count") >= misses

    dom = chromium_dom(f"http://127.0.0.1:{cdn.admin_port}/", tmp_path)
    assert figure(dom, "hit-ratio") == f"{hits / (hits + misses):.4f}"
    assert int(figure(dom, "objects")) == objects and int(figure(dom, "bytes")) == size
    assert figure(dom, "policy") == "wtinylfu"
    rows = re.findall(r"<tr><td><code>([^<]*)</code></td><td class=\"n\">(\d+)</td>", dom)
    assert rows[0] == (html.escape(top["url"]), "7")
    # No external assets: only the status frame's own inline script (proxy/core/statuspage.py).
    assert not re.search(r"<script[^>]*\bsrc=", dom) and "http://" not in dom.split("<body>")[0]


def test_evictions_stay_counted_by_policy_across_a_policy_reload(cdn, origin):
    # A small store under W-TinyLFU: 30 objects of 5 KB into 64 KiB evict.
    cdn.config.write_text(cdn.config.read_text().replace('policy = "wtinylfu"', 'policy = "wtinylfu"\nmax_bytes = 65536'))
    cdn.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: cdn.status()["max_bytes"] == 65536, 10, "the reload")
    for i in range(30):
        curl(cdn, f"/obj/ev{i}?cc=max-age=300&size=5000")
    before = cdn.status()["evictions_by_policy"]["wtinylfu"]
    assert before > 0 and cdn.status()["bytes"] <= 65536
    cdn.config.write_text(cdn.config.read_text().replace('policy = "wtinylfu"', 'policy = "lfu"'))
    cdn.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: cdn.status()["policy"] == "lfu", 10, "the policy reload")
    for i in range(30):
        curl(cdn, f"/obj/ev{i}?cc=max-age=300&size=5000")
    metrics = http_json(f"http://127.0.0.1:{cdn.admin_port}/metrics")[1]
    assert metric(metrics, 'tierproxy_cdn_evictions_total{policy="wtinylfu"}') == before
    assert metric(metrics, 'tierproxy_cdn_evictions_total{policy="lfu"}') > 0


def test_admin_token_guards_purge_and_trace_and_reloads(cdn, origin):
    """admin.token_file (added by a SIGHUP reload): purges and trace recordings need the bearer
    token (401 without it, 401 with a wrong one); reads stay open."""
    token = cdn.tmp / "admin.token"
    token.write_text("s3cret-token\n")
    text = cdn.config.read_text()
    cdn.config.write_text(text.replace("admin = { address", f'admin = {{ token_file = "{token}", address'))
    cdn.proc.send_signal(signal.SIGHUP)
    admin = f"http://127.0.0.1:{cdn.admin_port}"

    def post(path: str, *auth: str) -> str:
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                              "-H", "Content-Type: application/json", *auth, admin + path],
                             check=False, capture_output=True, text=True, timeout=30)
        return out.stdout

    wait_for(lambda: post("/purge?key=none") == "401", 10, "the reload to require the token")
    assert post("/trace?action=stop", "-H", "Authorization: Bearer wrong") == "401"
    assert post("/purge?key=none", "-H", "Authorization: Bearer s3cret-token") == "200"
    assert post("/trace?action=stop", "-H", "Authorization: Bearer s3cret-token") == "200"
    assert http_json(f"{admin}/status")[0] == 200  # reads need no token
    cdn.config.write_text(text)  # back to no token for whatever runs next
    cdn.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: post("/purge?key=none") == "200", 10, "the reload without the token")
