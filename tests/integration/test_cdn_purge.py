"""`tierproxy cdn` purge by surrogate key end to end: the real origin (cdnorigin.py) tags objects
with Surrogate-Key and Cache-Tag, `POST /purge?key=...` on the admin address drops (or with soft=1
marks stale) exactly that group; purges from elsewhere are refused. Real curl, real processes."""

from __future__ import annotations

import subprocess

from tests.integration import test_cdn
from tests.integration.cdnproc import purge
from tests.integration.test_cdn import curl

# The real origin and cdn processes of test_cdn.py, as this module's fixtures.
origin = test_cdn.origin
cdn = test_cdn.cdn


def test_purge_a_group_by_surrogate_key_and_cache_tag(cdn, origin):
    group = {"/obj/g1": "?cc=max-age=300&skey=product-7%20all",   # Surrogate-Key: product-7 all
             "/obj/g2": "?cc=max-age=300&tag=x,product-7",         # Cache-Tag: x,product-7
             "/obj/g3": "?cc=max-age=300&skey=product-8%20all"}    # another group
    for path, q in group.items():
        status, headers, _ = curl(cdn, path + q)
        assert status == 200 and "stored" in headers["cache-status"]
        # The keys are the cache's business: not sent to clients.
        assert "surrogate-key" not in headers and "cache-tag" not in headers
    code, body = purge(cdn, "key=product-7")
    assert code == 200 and body["purged"] == 2
    assert "fwd=uri-miss" in curl(cdn, "/obj/g1" + group["/obj/g1"])[1]["cache-status"]
    assert "fwd=uri-miss" in curl(cdn, "/obj/g2" + group["/obj/g2"])[1]["cache-status"]
    assert "hit" in curl(cdn, "/obj/g3" + group["/obj/g3"])[1]["cache-status"]
    assert [origin.count(p)["requests"] for p in group] == [2, 2, 1]
    # Several keys at once; a key nothing carries purges nothing.
    code, body = purge(cdn, "key=all&key=nothing-here")
    assert code == 200 and body["purged"] == 2
    assert cdn.status()["objects"] == 1  # g2 (tagged x, product-7) only
    # From a browser page elsewhere (CSRF) or under a foreign Host name: refused, nothing purged.
    for extra in (["-H", "Origin: http://evil.example", "-H", "Content-Type: application/json"],
                  ["-H", "Host: evil.example", "-H", "Content-Type: application/json"]):
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", *extra,
                              f"http://127.0.0.1:{cdn.admin_port}/purge?key=x"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "403"
    assert cdn.status()["objects"] == 1


def test_soft_purge_by_key_revalidates(cdn, origin):
    path = "/obj/sp?cc=max-age=300&etag=e1&skey=soft-group"
    curl(cdn, path)
    assert "hit" in curl(cdn, path)[1]["cache-status"]
    code, body = purge(cdn, "key=soft-group&soft=1")
    assert code == 200 and body["purged"] == 1 and body["soft"] is True
    assert cdn.status()["objects"] == 1  # kept, marked stale
    status, headers, body = curl(cdn, path)
    assert status == 200 and body == "/obj/sp #1" and "fwd=stale; fwd-status=304" in headers["cache-status"]
    assert origin.count("/obj/sp") == {"requests": 2, "not_modified": 1}
    assert "hit" in curl(cdn, path)[1]["cache-status"]


def test_purge_needs_a_url_or_a_key(cdn, origin):
    code, body = purge(cdn, "soft=1")
    assert code == 400 and "key=" in body["error"]
