"""pgwire framing: chunk invariance, limits, startup phases, and garbage -> PgProtocolError only."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.pgwire import encode as enc
from proxy.pgwire import messages as m
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import BackendFramer, FrontendFramer

from .test_pgwire_messages import BACKEND, FRONTEND

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

typed_frontend = FRONTEND.filter(lambda p: p[0][:1] != b"\x00").map(lambda p: p[0])
typed_backend = BACKEND.filter(lambda p: not isinstance(p[1], m.EncryptionResponse)).map(lambda p: p[0])


@st.composite
def frontend_stream(draw):
    """A client's bytes: maybe an SSLRequest refused, a StartupMessage, then typed messages."""
    parts = []
    if draw(st.booleans()):
        parts.append(enc.ssl_request())
    parts.append(enc.startup_message({"user": "u", "database": draw(st.text("abc", max_size=5))}))
    parts += draw(st.lists(typed_frontend, max_size=8))
    return parts


backend_stream = st.lists(typed_backend, max_size=10)


def _frames(framer, chunks):
    out = []
    for chunk in chunks:
        out += [(msg.type, bytes(msg.raw)) for msg in framer.feed(chunk)]
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _expected(parts):
    return [(b"" if p[:1] == b"\x00" else p[:1], p) for p in parts]


@SETTINGS
@given(frontend_stream(), st.lists(st.integers(0, 10_000), max_size=12))
def test_frontend_chunk_invariance(parts, cuts):
    data = b"".join(parts)
    whole = _frames(FrontendFramer(), [data])
    assert whole == _expected(parts)
    assert _frames(FrontendFramer(), [data[i : i + 1] for i in range(len(data))]) == whole
    assert _frames(FrontendFramer(), _split(data, cuts)) == whole


@SETTINGS
@given(backend_stream, st.lists(st.integers(0, 10_000), max_size=12))
def test_backend_chunk_invariance(parts, cuts):
    data = b"".join(parts)
    whole = _frames(BackendFramer(), [data])
    assert whole == _expected(parts)
    assert _frames(BackendFramer(), [data[i : i + 1] for i in range(len(data))]) == whole
    assert _frames(BackendFramer(), _split(data, cuts)) == whole


def test_memoryview_and_bytearray_input_is_copied_not_aliased():
    buf = bytearray(enc.query("select 1"))
    (msg,) = FrontendFramer(startup=False).feed(buf)
    buf[:] = b"X" * len(buf)
    assert bytes(msg.raw) == enc.query("select 1")
    assert bytes(msg.body) == b"select 1\x00"


def _feed_and_decode(framer, chunks, decode):
    try:
        for chunk in chunks:
            for msg in framer.feed(chunk):
                try:
                    decode(msg)
                except PgProtocolError:
                    pass
    except PgProtocolError:
        pass


GARBAGE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GARBAGE
@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=6))
def test_garbage_gives_messages_or_protocol_error(data, cuts):
    chunks = _split(data, cuts)
    _feed_and_decode(FrontendFramer(), chunks, m.decode_frontend)
    _feed_and_decode(FrontendFramer(startup=False), chunks, m.decode_frontend)
    _feed_and_decode(BackendFramer(), chunks, m.decode_backend)
    framer = BackendFramer()
    framer.expect_encryption_response()
    _feed_and_decode(framer, chunks, m.decode_backend)


@st.composite
def mutated(draw, stream):
    data = bytearray(b"".join(draw(stream)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif data and pos < len(data):
            if op == "flip":
                data[pos] = draw(st.integers(0, 255))
            else:
                del data[pos]
    return bytes(data)


@GARBAGE
@given(mutated(frontend_stream()), st.lists(st.integers(0, 1000), max_size=6))
def test_mutated_frontend_stream(data, cuts):
    _feed_and_decode(FrontendFramer(), _split(data, cuts), m.decode_frontend)


@GARBAGE
@given(mutated(backend_stream), st.lists(st.integers(0, 1000), max_size=6))
def test_mutated_backend_stream(data, cuts):
    _feed_and_decode(BackendFramer(), _split(data, cuts), m.decode_backend)


# --- Limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("framer_factory", [lambda: FrontendFramer(startup=False), BackendFramer])
def test_huge_declared_length_raises_at_the_header(framer_factory):
    framer = framer_factory()
    with pytest.raises(PgProtocolError) as info:
        framer.feed(b"D" + struct.pack("!i", 2**31 - 1))
    assert info.value.sqlstate == "08P01"
    with pytest.raises(PgProtocolError):  # dead after an error
        framer.feed(enc.sync())


def test_huge_declared_length_under_a_raised_limit_waits_without_allocating():
    framer = BackendFramer(max_message_length=2**31 - 1)
    tracemalloc.start()
    try:
        assert framer.feed(b"D" + struct.pack("!i", 2**31 - 1)) == []
        for _ in range(100):
            assert framer.feed(b"x" * 1000) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    assert framer.buffered == 5 + 100_000


def test_max_message_length_is_on_the_length_word():
    framer = FrontendFramer(startup=False, max_message_length=13)
    assert len(framer.feed(enc.query("select 1"))) == 1  # length word 13
    with pytest.raises(PgProtocolError):
        framer.feed(enc.query("select 12"))


@pytest.mark.parametrize("length", [0, 3, -1, -(2**31)])
def test_typed_length_below_four(length):
    with pytest.raises(PgProtocolError) as info:
        BackendFramer().feed(b"Z" + struct.pack("!i", length))
    assert info.value.sqlstate == "08P01"


@pytest.mark.parametrize("length", [0, 4, 7, -5, 10_005, 2**31 - 1])
def test_startup_length_bounds(length):
    with pytest.raises(PgProtocolError) as info:
        FrontendFramer().feed(struct.pack("!ii", length, 196608))
    assert info.value.sqlstate == "08P01"


def test_startup_length_limit_matches_postgres():
    # The postmaster allows length - 4 <= 10000.
    params = {"user": "u", "options": "x" * (10_000 - 4 - len(b"user\0u\0options\0\0\0"))}
    packet = enc.startup_message(params)
    assert len(packet) == 10_004
    assert FrontendFramer().feed(packet)[0].type == b""
    with pytest.raises(PgProtocolError):
        FrontendFramer(max_startup_length=9_999).feed(packet)


def test_unknown_frontend_type_and_earlier_messages_kept():
    data = enc.query("select 1") + enc.sync() + b"Z\x00\x00\x00\x05I"
    with pytest.raises(PgProtocolError) as info:
        FrontendFramer(startup=False).feed(data)
    assert info.value.sqlstate == "08P01"
    assert [msg.type for msg in info.value.messages] == [b"Q", b"S"]
    with pytest.raises(PgProtocolError):  # rejected as soon as the type byte arrives
        FrontendFramer(startup=False).feed(b"z")


def test_unknown_backend_type():
    with pytest.raises(PgProtocolError):
        BackendFramer().feed(b"Q\x00\x00\x00\x04")


# --- Startup phase ------------------------------------------------------------------------------


def test_ssl_request_keeps_startup_phase_then_startup_switches():
    framer = FrontendFramer()
    (ssl,) = framer.feed(enc.ssl_request())
    assert ssl.type == b"" and ssl.startup_code == 80877103 and framer.in_startup
    assert framer.buffered == 0  # nothing smuggled behind the SSLRequest (CVE-2021-23214)
    (gss,) = framer.feed(enc.gssenc_request())
    assert gss.startup_code == 80877104 and framer.in_startup
    msgs = framer.feed(enc.startup_message({"user": "u"}) + enc.query("select 1"))
    assert [x.type for x in msgs] == [b"", b"Q"]
    assert m.decode_frontend(msgs[0]) == m.StartupMessage(196608, {"user": "u"})
    assert not framer.in_startup


def test_startup_done_by_hand():
    framer = FrontendFramer()
    framer.startup_done()
    assert framer.feed(enc.sync())[0].type == b"S"


def test_cancel_request_then_nothing():
    framer = FrontendFramer()
    (msg,) = framer.feed(enc.cancel_request(42, 7))
    assert m.decode_frontend(msg) == m.CancelRequest(42, 7)
    with pytest.raises(PgProtocolError):
        framer.feed(b"\x00")


def test_encryption_request_with_a_body_is_refused():
    with pytest.raises(PgProtocolError):
        FrontendFramer().feed(struct.pack("!iii", 12, 80877103, 0))


@pytest.mark.parametrize("code", [(2 << 16), (1 << 16), 1234, 0])
def test_unsupported_protocol_is_feature_not_supported(code):
    with pytest.raises(PgProtocolError) as info:
        FrontendFramer().feed(struct.pack("!ii", 9, code) + b"\x00")
    assert info.value.sqlstate == "0A000"


def test_protocol_3_2_startup_is_framed():
    (msg,) = FrontendFramer().feed(enc.startup_message({"user": "u"}, protocol=(3 << 16) | 2))
    assert m.decode_frontend(msg).protocol == 196610


def test_backend_encryption_response_byte():
    framer = BackendFramer()
    framer.expect_encryption_response()
    msgs = framer.feed(b"N" + enc.authentication_ok())
    assert [(x.type, bytes(x.raw)) for x in msgs] == [(b"", b"N"), (b"R", enc.authentication_ok())]
    assert m.decode_backend(msgs[0]) == m.EncryptionResponse("N")

    old = BackendFramer()  # a server that does not know SSLRequest answers an ErrorResponse
    old.expect_encryption_response()
    (err,) = old.feed(enc.error_response("FATAL", "08P01", "unsupported frontend protocol"))
    assert err.type == b"E"

    bad = BackendFramer()
    bad.expect_encryption_response()
    with pytest.raises(PgProtocolError):
        bad.feed(b"X")


def test_message_equality_and_repr():
    a = FrontendFramer(startup=False).feed(enc.query("x"))[0]
    b = FrontendFramer(startup=False).feed(b"" + enc.query("x"))[0]
    assert a == b and a != enc.query("x")
    assert "b'Q'" in repr(a) and len(a) == len(enc.query("x"))
    assert a.startup_code is None
