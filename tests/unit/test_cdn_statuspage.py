"""The cdn admin's HTML page (proxy/cdn/statuspage.py): figures under their ids, URLs escaped."""

from __future__ import annotations

from proxy.cdn.statuspage import render_status_page


def status(**over):
    st = {"hits": 3, "misses": 1, "hit_ratio": 0.75, "bytes": 1536, "max_bytes": 4096, "objects": 2,
          "policy": "wtinylfu", "evictions": 0, "top_urls": [], "trace": None}
    return {**st, **over}


def test_figures_and_empty_top_list():
    page = render_status_page(status())
    for fig in ('id="hit-ratio">0.7500<', 'id="bytes">1536<', 'id="max-bytes">4096<', 'id="objects">2<',
                'id="policy">wtinylfu<', "nothing stored yet", "37.5%"):
        assert fig in page, fig


def test_urls_are_escaped_and_no_script_or_external_asset():
    page = render_status_page(status(top_urls=[{"url": "http://h/<script>alert(1)</script>", "hits": 9, "bytes": 10}],
                                     trace={"file": "/tmp/<x>.trace", "records": 4}))
    assert "&lt;script&gt;" in page and "/tmp/&lt;x&gt;.trace" in page
    # Only the frame's own script (proxy/core/statuspage.py) and its data block; nothing fetched.
    assert page.count("<script") == 2 and "alert(1)</script>" not in page
    assert "src=" not in page and 'rel="stylesheet"' not in page
