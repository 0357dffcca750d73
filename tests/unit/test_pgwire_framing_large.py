"""pgwire framing of large messages: one growing buffer, no second copy; 54000 vs 08P01 limits."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pgwire import encode as enc
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import LARGE_MESSAGE, FrontendFramer

MIB = 1 << 20


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 1 << 30), max_size=12))
def test_a_large_message_between_small_ones_frames_the_same_in_any_chunking(cuts):
    big = enc.query("SELECT '" + "x" * (LARGE_MESSAGE + 12345) + "'")
    stream = enc.sync() + big + enc.query("select 1") + enc.sync()
    framer = FrontendFramer(startup=False)
    out = []
    for chunk in _chunks(stream, cuts):
        out += framer.feed(chunk)
    assert [(m.type, bytes(m.raw)) for m in out] == [
        (b"S", enc.sync()), (b"Q", big), (b"Q", enc.query("select 1")), (b"S", enc.sync())
    ]
    assert framer.buffered == 0


def test_a_20_mib_message_in_64_kib_chunks_is_held_about_once():
    body = b"\0" + b"y" * (20 * MIB) + b"\0\0\0"
    message = b"P" + struct.pack("!i", len(body) + 4) + body
    del body
    framer = FrontendFramer(startup=False)
    tracemalloc.start()
    try:
        out = []
        for i in range(0, len(message), 65536):
            out += framer.feed(message[i : i + 65536])  # a new chunk each time, as from a socket
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == 1 and out[0].type == b"P" and out[0].raw == message
    # One buffer of the message (plus bytearray's 1/8 headroom), not chunks plus their join.
    assert peak < 1.3 * len(message), peak


def test_over_a_configured_limit_is_54000_with_the_unread_rest_and_over_1_gib_is_08p01():
    framer = FrontendFramer(startup=False, max_message_length=MIB)
    with pytest.raises(PgProtocolError) as info:
        framer.feed(b"Q" + struct.pack("!i", 2 * MIB) + b"abc")
    assert info.value.sqlstate == "54000"
    assert info.value.unread == 2 * MIB + 1 - 8
    with pytest.raises(PgProtocolError) as info:
        FrontendFramer(startup=False, max_message_length=MIB).feed(b"Q" + struct.pack("!i", (1 << 30) + 1))
    assert info.value.sqlstate == "08P01"
