"""`tierproxy cdn` and RFC 5861 end to end: stale-while-revalidate answers at once from the stale
object and revalidates it in the background (once for many requests); stale-if-error answers with
the stale object when the origin fails with 5xx or is gone, within the window only. A real
aiohttp origin process (cdnorigin.py), real curl, the daemon as a real process."""

from __future__ import annotations

import subprocess

from tests.integration.lbproc import http_json, wait_for
from tests.integration import test_cdn
from tests.integration.test_cdn import curl

# The real origin and cdn processes of test_cdn.py, as this module's fixtures.
origin = test_cdn.origin
cdn = test_cdn.cdn


def fail(o, status: int) -> None:
    assert http_json(f"http://127.0.0.1:{o.port}/_fail?status={status}", "POST")[0] == 200


def test_stale_while_revalidate_answers_stale_and_refreshes_in_background(cdn, origin):
    # Age=5 with max-age=1: the stored object is stale by about 4 s from the start.
    path = "/obj/swr?cc=max-age=1,stale-while-revalidate=600&age=5"
    status, headers, body = curl(cdn, path)
    assert status == 200 and body == "/obj/swr #1" and "fwd=uri-miss" in headers["cache-status"]
    status, headers, body = curl(cdn, path)
    assert status == 200 and body == "/obj/swr #1"
    cs = headers["cache-status"]
    assert cs.startswith("tierproxy; fwd=stale; ttl=-") and 'detail="stale-while-revalidate"' in cs
    # The background revalidation reaches the origin and replaces the stored object.
    wait_for(lambda: origin.count("/obj/swr")["requests"] == 2, 15, "the background revalidation")
    wait_for(lambda: curl(cdn, path)[2] == "/obj/swr #2", 15, "the refreshed object to be served")
    st = cdn.status()
    assert st["stale_while_revalidate"] >= 2 and st["background_revalidations"] >= 2


def test_stale_while_revalidate_one_background_fetch_for_many_requests(cdn, origin):
    path = "/obj/swrc?cc=max-age=1,stale-while-revalidate=600&age=5&delay=3"
    assert curl(cdn, path)[2] == "/obj/swrc #1"
    url = f"http://127.0.0.1:{cdn.port}{path}"
    out = subprocess.run(["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", "20",
                          "--max-time", "30", "-D", "-", *["-o", "/dev/null", url] * 20],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('detail="stale-while-revalidate"') == 20, out.stdout
    # All 20 were answered while the one background revalidation (3 s at the origin) ran.
    assert cdn.status()["background_revalidations"] == 1
    wait_for(lambda: origin.count("/obj/swrc")["requests"] == 2, 15, "the background revalidation")
    assert origin.count("/obj/swrc")["requests"] == 2


def test_client_no_cache_and_must_revalidate_get_a_validated_answer(cdn, origin):
    path = "/obj/swrn?cc=max-age=1,stale-while-revalidate=600&age=5"
    must = "/obj/swrm?cc=max-age=1,must-revalidate,stale-while-revalidate=600&age=5"
    curl(cdn, path)
    curl(cdn, must)
    assert 'detail="stale-while-revalidate"' in curl(cdn, path)[1]["cache-status"]
    wait_for(lambda: origin.count("/obj/swrn")["requests"] == 2, 15, "the background revalidation")
    # The client's no-cache: the origin is asked before answering (RFC 9111 5.2.1.4).
    status, headers, body = curl(cdn, path, "-H", "Cache-Control: no-cache")
    assert status == 200 and body == "/obj/swrn #3" and "stale-while-revalidate" not in headers["cache-status"]
    # must-revalidate in the response forbids any stale answer (RFC 9111 4.2.4).
    status, headers, body = curl(cdn, must)
    assert body == "/obj/swrm #2" and "fwd=stale; fwd-status=200" in headers["cache-status"]


def test_stale_if_error_on_origin_5xx_within_the_window(cdn, origin):
    ok = "/obj/sie?cc=max-age=1,stale-if-error=600&age=5"
    plain = "/obj/sie2?cc=max-age=1&age=5"
    short = "/obj/sie3?cc=max-age=1,stale-if-error=2&age=10"
    asked = "/obj/sie4?cc=max-age=1&age=5"
    for p in (ok, plain, short, asked):
        assert curl(cdn, p)[0] == 200
    fail(origin, 503)
    status, headers, body = curl(cdn, ok)
    assert status == 200 and body == "/obj/sie #1"
    cs = headers["cache-status"]
    assert "fwd=stale; fwd-status=503; ttl=-" in cs and 'detail="stale-if-error"' in cs
    # No stale-if-error: the origin's 503 is the answer (it answered; the cache is not disconnected).
    status, headers, body = curl(cdn, plain)
    assert status == 503 and body == "origin failing\n"
    # The client may grant a window of its own for its request (RFC 5861 4).
    status, headers, body = curl(cdn, asked, "-H", "Cache-Control: stale-if-error=600")
    assert status == 200 and body == "/obj/sie4 #1" and 'detail="stale-if-error"' in headers["cache-status"]
    # Stale by ~9 s, window 2 s: the origin bounded staleness, so the error is passed on.
    status, headers, _ = curl(cdn, short)
    assert status == 503 and "fwd=stale; fwd-status=503" in headers["cache-status"]
    fail(origin, 0)
    assert cdn.status()["stale_if_error"] == 2


def test_stale_if_error_bounds_serving_stale_when_the_origin_is_gone(cdn, origin):
    within = "/obj/sig?cc=max-age=1,stale-if-error=600&age=5"
    beyond = "/obj/sig2?cc=max-age=1,stale-if-error=2&age=10"
    unbounded = "/obj/sig3?cc=max-age=1&age=5"
    for p in (within, beyond, unbounded):
        curl(cdn, p)
    origin.stop()
    status, headers, body = curl(cdn, within)
    assert status == 200 and body == "/obj/sig #1" and 'detail="stale-if-error"' in headers["cache-status"]
    status, headers, _ = curl(cdn, beyond)
    assert status == 502 and "fwd=stale" in headers["cache-status"]
    status, headers, body = curl(cdn, unbounded)
    assert status == 200 and body == "/obj/sig3 #1" and 'detail="origin-unreachable"' in headers["cache-status"]
