"""`tierproxy cdn` versioned URLs end to end: with cache.versioned_pattern set, a content-hash
path's 200 is stored with a long TTL and answered with `immutable`, even when the origin gave no
freshness; other paths and unstorable responses are untouched. Real origin, curl, processes."""

from __future__ import annotations

import subprocess
import sys

from tests.integration import cdnproc, test_cdn
from tests.integration.test_cdn import ENV, REPO, curl

origin = test_cdn.origin

PATTERN = r"\.[0-9a-f]{8,}\.(css|js)$"


def test_versioned_paths_get_a_long_ttl_and_immutable(tmp_path, origin):
    with cdnproc.running_cdn(tmp_path, origin, cache=f"versioned_pattern = '{PATTERN}'\nversioned_ttl = 31536000") as cdn:
        # No Cache-Control at all from the origin: normally not storable (no freshness).
        status, headers, body = curl(cdn, "/obj/app.0123abcd.css")
        assert status == 200 and body == "/obj/app.0123abcd.css #1"
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "stored" in headers["cache-status"] and "ttl=3153" in headers["cache-status"]
        status, headers, body = curl(cdn, "/obj/app.0123abcd.css")
        assert body == "/obj/app.0123abcd.css #1" and headers["cache-status"].startswith("tierproxy; hit; ttl=3153")
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        # A short max-age from the origin is replaced too; the query does not hide the hash.
        _, headers, _ = curl(cdn, "/obj/lib.89abcdef01.js?cc=max-age=5")
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        # Not versioned: the origin's rules apply (a heuristically cacheable 200 without
        # Last-Modified: stored with no freshness, so the next request goes to the origin).
        _, headers, _ = curl(cdn, "/obj/app.css")
        assert "cache-control" not in headers and "ttl=0" in headers["cache-status"]
        _, headers, _ = curl(cdn, "/obj/app.css")
        assert "fwd=stale" in headers["cache-status"]
        # Versioned, but carrying Set-Cookie: still never stored, nothing rewritten.
        _, headers, _ = curl(cdn, "/obj/me.0123abcd.js?cookie=1")
        assert 'detail="set-cookie"' in headers["cache-status"] and "immutable" not in headers.get("cache-control", "")
        assert origin.count("/obj/app.0123abcd.css")["requests"] == 1
        assert origin.count("/obj/app.css")["requests"] == 2


def test_check_config_refuses_a_bad_pattern(tmp_path):
    bad = tmp_path / "cdn-bad.toml"
    bad.write_text('origins = ["127.0.0.1:1"]\n[cache]\nversioned_pattern = "(["\n')
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)], cwd=REPO, env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cache.versioned_pattern" in r.stderr and "regular expression" in r.stderr
