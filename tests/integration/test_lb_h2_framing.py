"""How the balancer frames HTTP/2 responses (RFC 9113 6.1, 8.1): a response's END_STREAM rides
on its last DATA frame instead of an extra empty DATA frame, so a small answer is exactly HEADERS
plus one DATA frame, for every one of many concurrent streams on one connection. Raw frames are
read back over a real TLS connection (ALPN h2) from the balancer in front of a real web worker."""

from __future__ import annotations

import json

import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from tests.integration.test_lb_h2_conformance import Raw, request
from tests.integration.test_lb_http2 import h2lb  # noqa: F401  (the fixture, used through `lb`)

pytestmark = pytest.mark.integration


@pytest.fixture
def lb(request):
    """test_lb_http2's balancer: an https listener with http2 = true, 50 streams."""
    return request.getfixturevalue("h2lb")


STREAMS = list(range(1, 40, 2))  # 20 concurrent streams (the listener allows 50)


def test_each_small_response_is_headers_and_one_data_frame_with_end_stream(lb):
    c = Raw(lb)
    try:
        # All the requests in one write: the balancer works on them concurrently.
        c.send(b"".join(c.headers(sid, request(b"/whoami")) for sid in STREAMS))

        def ended(sid: int) -> bool:
            return any(sid == f.stream_id and "END_STREAM" in f.flags for f in c.frames
                       if isinstance(f, (DataFrame, HeadersFrame)))  # fmt: skip

        assert c.until(lambda: all(ended(s) for s in STREAMS), timeout=30), c.frames
        assert not [f for f in c.frames if isinstance(f, RstStreamFrame)]
        for sid in STREAMS:
            mine = [f for f in c.frames if f.stream_id == sid]
            assert [type(f) for f in mine] == [HeadersFrame, DataFrame], mine
            data = mine[1]
            assert "END_STREAM" in data.flags and len(data.data) > 0, data
            assert json.loads(data.data)["instance"] == "w"
    finally:
        c.close()
