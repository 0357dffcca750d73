"""Single byte ranges from a stored object (proxy/cdn/ranges.py), against RFC 9110 14.1.2's examples."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.ranges import UNSATISFIABLE, byte_range, if_range_ok


def test_rfc_examples_on_10000_bytes():
    assert byte_range(b"bytes=0-499", 10000) == (0, 499)
    assert byte_range(b"bytes=500-999", 10000) == (500, 999)
    assert byte_range(b"bytes=-500", 10000) == (9500, 9999)
    assert byte_range(b"bytes=9500-", 10000) == (9500, 9999)
    assert byte_range(b"bytes=9500-20000", 10000) == (9500, 9999)
    assert byte_range(b"bytes=10000-", 10000) == UNSATISFIABLE
    assert byte_range(b"bytes=-0", 10000) == UNSATISFIABLE


def test_ignored_forms():
    for value in (None, b"items=0-1", b"bytes=0-1,5-6", b"bytes=5-1", b"bytes=a-b", b"bytes=1", b"bytes=-x"):
        assert byte_range(value, 100) is None


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
def test_range_within_object(first, last, length):
    r = byte_range(f"bytes={first}-{last}".encode(), length)
    if last < first:
        assert r is None
    elif first >= length:
        assert r == UNSATISFIABLE
    else:
        assert r == (first, min(last, length - 1))


def test_if_range():
    assert if_range_ok(None, None, None)
    assert if_range_ok(b'"a"', b'"a"', None) and not if_range_ok(b'"a"', b'"b"', None)
    assert not if_range_ok(b'"a"', b'W/"a"', None)
    lm = b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert if_range_ok(lm, None, lm) and not if_range_ok(lm, None, None)
