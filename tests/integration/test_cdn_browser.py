"""A headless browser loading a page with its assets through `tierproxy cdn`: a real web worker
(workers/web.py --static, the demo's static site from proxy/devstack/static_site.py) is the
origin; Chromium loads the page through the cdn twice, each time with an empty browser cache.
The first load stores the stylesheet, the script and the image (versioned names: long TTL,
immutable); the second is answered from the cdn (hits per object in /status, no asset reaches
the origin), and the page shows that each asset arrived and worked both times."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from proxy.devstack.static_site import VERSIONED_PATTERN, write_static_site
from proxy.devstack.web import start_web_worker
from tests.integration import cdnproc
from tests.integration.test_cdn import curl
from tests.integration.test_cdn_ops import chromium_dom


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    static = write_static_site(tmp / "static")
    worker = start_web_worker("static1", static=static.directory, log_dir=tmp)
    try:
        with cdnproc.running_cdn(tmp, worker, cache=f"versioned_pattern = '{VERSIONED_PATTERN}'") as cdn:
            yield static, worker, cdn
    finally:
        worker.close()


def served(worker) -> int:
    with urllib.request.urlopen(f"{worker.url}/count", timeout=5) as resp:
        return json.loads(resp.read())["count"]


def test_page_assets_are_cached_and_the_second_load_hits(site, tmp_path):
    static, worker, cdn = site
    page = f"http://127.0.0.1:{cdn.port}/static/index.html"
    urls = {a: f"http://127.0.0.1:{cdn.port}/static/{a}" for a in static.assets}
    for n in (1, 2):
        before = served(worker)
        dom = chromium_dom(page, tmp_path / f"load{n}")  # a new profile: nothing in the browser cache
        assert re.search(r'id="css">stylesheet: rgb\(0, 128, 0\)<', dom), dom
        assert 'id="js">script ran<' in dom and 'id="img">image: 24x16<' in dom, dom
        top = {t["url"]: t["hits"] for t in cdn.status()["top_urls"]}
        if n == 1:
            first = served(worker) - before
            assert first >= 4  # the page and three assets (and the browser's favicon try)
            assert not top  # nothing answered from the cache yet
        else:
            # Each asset once from the cache: none reached the origin again (the page, under
            # heuristic freshness, may be revalidated).
            assert {u: top.get(u) for u in urls.values()} == {u: 1 for u in urls.values()}, top
            assert served(worker) - before in (0, 1)
    for asset in static.assets:
        status, headers, _ = curl(cdn, f"/static/{asset}", "-I")
        assert status == 200 and headers["cache-status"].startswith("tierproxy; hit")
        assert "immutable" in headers["cache-control"]
    # The page has only heuristic freshness (10 % of its Last-Modified age): a hit or a 304.
    status, headers, _ = curl(cdn, "/static/index.html", "-I")
    assert status == 200 and re.match(r"tierproxy; (hit|fwd=stale; fwd-status=304)", headers["cache-status"])
