"""Versioned URLs in the cdn (proxy/cdn/versioned.py and the cache.versioned_pattern setting):
which paths match, what the stored Cache-Control becomes, and that a bad pattern is refused by
config validation. Expected values are written out here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from proxy.cdn.config import CdnConfig
from proxy.cdn.versioned import compile_pattern, immutable_headers, is_versioned

HASHED = compile_pattern(r"\.[0-9a-f]{8,}\.(css|js)$")


def test_examples():
    assert is_versioned(b"/static/app.3f9a1c2e.js", HASHED)
    assert is_versioned(b"/static/app.3f9a1c2e.css?v=1", HASHED)  # the query is not the path
    assert not is_versioned(b"/static/app.js", HASHED)
    assert not is_versioned(b"/static/app.3f9a1c2e.js.map", HASHED)
    assert not is_versioned(b"/static/app.js?h=3f9a1c2e.js", HASHED)  # a hash in the query only
    assert not is_versioned(b"/static/app.3f9a1c2e.js", None)


@given(st.text(alphabet="0123456789abcdef", min_size=8, max_size=40), st.text(alphabet="abcxyz/_-", max_size=20),
       st.sampled_from(["css", "js"]), st.text(alphabet="a=&1", max_size=10))
def test_any_hash_matches_whatever_the_query(digest, stem, ext, query):
    target = f"/{stem}.{digest}.{ext}".encode() + (b"?" + query.encode() if query else b"")
    assert is_versioned(target, HASHED)


@given(st.text(alphabet="0123456789abcdef", max_size=7), st.sampled_from(["css", "js"]))
def test_too_short_a_hash_does_not_match(digest, ext):
    assert not is_versioned(f"/app.{digest}.{ext}".encode(), HASHED)


@given(st.lists(st.tuples(st.sampled_from([b"cache-control", b"expires", b"etag", b"content-type"]),
                          st.binary(min_size=1, max_size=10)), max_size=8),
       st.integers(min_value=1, max_value=2**31))
def test_one_immutable_cache_control_and_no_expires(fields, ttl):
    out = immutable_headers(fields, ttl)
    assert [v for n, v in out if n == b"cache-control"] == [f"public, max-age={ttl}, immutable".encode()]
    assert not any(n == b"expires" for n, _ in out)
    assert [f for f in out if f[0] in (b"etag", b"content-type")] == \
        [f for f in fields if f[0] in (b"etag", b"content-type")]


def test_config_validates_the_pattern():
    ok = CdnConfig(origins=["127.0.0.1:1"], cache={"versioned_pattern": r"\.[0-9a-f]{8}\."})
    assert ok.cache.versioned_ttl == 31536000
    for bad in ("([", "", "a{2,1}"):
        with pytest.raises(ValidationError, match="versioned_pattern"):
            CdnConfig(origins=["127.0.0.1:1"], cache={"versioned_pattern": bad})
    with pytest.raises(ValidationError, match="versioned_ttl"):
        CdnConfig(origins=["127.0.0.1:1"], cache={"versioned_ttl": 0})
