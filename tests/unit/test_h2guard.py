"""lb/h2guard.py: the CONTINUATION-flood scanner over frames written with hyperframe (an
independent encoder), fed whole and split at random points (hypothesis), and the reset budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame

from proxy.lb.h2guard import PREFACE, FrameScanner, ResetBudget


def headers(sid: int, size: int, end: bool) -> bytes:
    f = HeadersFrame(sid)
    f.data = b"h" * size
    if end:
        f.flags.add("END_HEADERS")
    return f.serialize()


def cont(sid: int, size: int, end: bool) -> bytes:
    f = ContinuationFrame(sid)
    f.data = b"c" * size
    if end:
        f.flags.add("END_HEADERS")
    return f.serialize()


def data(sid: int, size: int) -> bytes:
    f = DataFrame(sid)
    f.data = b"d" * size
    return f.serialize()


def feed_split(scanner: FrameScanner, stream: bytes, cuts: list[int]) -> str | None:
    points = sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]
    start = 0
    for p in points:
        why = scanner.feed(stream[start:p])
        if why is not None:
            return why
        start = p
    return None


NORMAL = (PREFACE + SettingsFrame(0).serialize() + headers(1, 300, True) + data(1, 20000)
          + headers(3, 16384, False) + cont(3, 16384, False) + cont(3, 100, True)
          + PingFrame(0).serialize() + data(3, 5))  # fmt: skip


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_ordinary_traffic_passes_however_it_is_split(cuts):
    assert feed_split(FrameScanner(max_block=65536), NORMAL, cuts) is None


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=40), st.integers(1, 16384))
def test_a_header_block_past_the_limit_is_refused_however_it_is_split(cuts, size):
    flood = PREFACE + headers(1, size, False) + b"".join(cont(1, size, False) for _ in range(100))
    scanner = FrameScanner(max_block=65536, max_frames=32)
    why = feed_split(scanner, flood, cuts)
    assert why is not None and "CONTINUATION flood" in why


def test_the_limit_is_on_bytes_and_on_frames():
    # 33 small CONTINUATION frames: under the byte limit, over the frame limit
    many = PREFACE + headers(1, 10, False) + b"".join(cont(1, 10, False) for _ in range(32))
    assert FrameScanner(max_block=65536, max_frames=32).feed(many) is not None
    # a block that ends in time is fine, and the next one is counted afresh
    ok = PREFACE + (headers(1, 10, False) + b"".join(cont(1, 10, False) for _ in range(30)) + cont(1, 1, True)) * 3
    assert FrameScanner(max_block=65536, max_frames=32).feed(ok) is None
    big = PREFACE + headers(1, 16384, False) + cont(1, 16384, False) + cont(1, 16384, False)
    assert FrameScanner(max_block=40000).feed(big) is not None


def test_reset_budget_is_a_token_bucket():
    b = ResetBudget(capacity=3, per_second=1, now=0.0)
    assert [b.spend(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.spend(2.5)  # refilled
    b2 = ResetBudget(capacity=5, per_second=10, now=0.0)
    assert all(b2.spend(i * 0.1) for i in range(100))  # as fast as the refill: never runs out


def test_settings_ack_with_a_payload_is_a_frame_size_error():
    # RFC 9113 6.5: FRAME_SIZE_ERROR (the h2 library says PROTOCOL_ERROR); an empty ACK passes.
    ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
    bad = b"\x00\x00\x06\x04\x01\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"
    scanner = FrameScanner(max_block=65536)
    assert scanner.feed(PREFACE + ack) is None
    assert scanner.feed(bad) == "SETTINGS ACK with a payload" and scanner.error_code == 0x6
    # a SETTINGS frame (no ACK) with values is ordinary
    assert FrameScanner(max_block=65536).feed(PREFACE + bad[:4] + b"\x00" + bad[5:]) is None
