"""Differential tests of the native layer: hypothesis feeds the same inputs to the compiled module
and to its pure-Python twin (`proxy._native.load_pure`) and requires identical results, errors
included: the HTTP/1.1 simple recognisers, the PostgreSQL framing and the relay's scanner (the
modules proxy/_native.py compiles). Skipped where the module is not compiled (the pure pass, a checkout nobody built;
tests/unit/test_native.py requires the build in CI)."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from tests.unit.test_http1_simple import near_simple_requests, near_simple_responses, requests, responses


def _twins(name: str):
    compiled = importlib.import_module(name)
    if _native.pure_requested() or not compiled.__file__.endswith(".so"):
        pytest.skip(f"{name} is not compiled here")
    return compiled, _native.load_pure(name)


def outcome(fn, *args):
    """What a call gives: ("ok", result) or ("raised", type name, message)."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc))


def same(compiled_fn, pure_fn, *args) -> None:
    got, want = outcome(compiled_fn, *args), outcome(pure_fn, *args)
    assert got == want, args


# Bytes of any kind a caller might pass, and a few things no caller should (the errors must match).
def _as(kind: str, data: bytes):
    return {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]


KINDS = st.sampled_from(["bytes", "bytes", "bytes", "bytearray", "memoryview"])
MAX_HEADS = st.sampled_from([8192, 8192, 64, 0, -1, 1 << 40])


@settings(max_examples=400)
@given(st.one_of(requests(), near_simple_requests(), st.binary(max_size=200)), KINDS, MAX_HEADS)
def test_simple_request_compiled_is_pure(data, kind, max_head):
    compiled, pure = _twins("proxy.http1._simple")
    same(compiled.simple_request, pure.simple_request, _as(kind, data), max_head)


@settings(max_examples=400)
@given(st.one_of(responses().map(lambda c: c[0]), near_simple_responses().map(lambda c: c[0]),
                 st.binary(max_size=200)), KINDS, MAX_HEADS)  # fmt: skip
def test_simple_response_compiled_is_pure(data, kind, max_head):
    compiled, pure = _twins("proxy.http1._simple")
    same(compiled.simple_response, pure.simple_response, _as(kind, data), max_head)


@given(st.binary(max_size=64), st.integers(-80, 80), st.integers(-80, 80))
def test_cut_connection_compiled_is_pure(data, start, end):
    compiled, pure = _twins("proxy.http1._simple")
    same(compiled.cut_connection, pure.cut_connection, data, start, end)


def test_wrong_types_raise_the_same_errors():
    compiled, pure = _twins("proxy.http1._simple")
    for args in [(None, 10), ("GET / HTTP/1.1\r\n\r\n", 100), (b"GET", None), (b"x", "1")]:
        same(compiled.simple_request, pure.simple_request, *args)
        same(compiled.simple_response, pure.simple_response, *args)


# -- PostgreSQL message framing -----------------------------------------------------------------

from tests.unit.test_pgwire_framing import _split, backend_stream, frontend_stream  # noqa: E402


def _framed(framer, chunks):
    """Every feed's outcome in turn: the messages (type, raw, body) or the error and what it carries."""
    out = []
    for chunk in chunks:
        try:
            msgs = framer.feed(chunk)
            out.append(("ok", [(m.type, bytes(m.raw), bytes(m.body), m.startup_code, len(m), repr(m), m == m)
                               for m in msgs]))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - compared
            carried = [(m.type, bytes(m.raw)) for m in getattr(exc, "messages", [])]
            out.append(("raised", type(exc).__name__, str(exc), getattr(exc, "code", None), carried,
                        getattr(exc, "unread", None)))  # fmt: skip
    out.append(("buffered", framer.buffered))
    return out


GARBAGE = st.binary(max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.one_of(frontend_stream(), st.lists(GARBAGE, max_size=3)), st.lists(st.integers(0, 4000), max_size=8),
       st.sampled_from([1 << 30, 64, 4]), st.booleans(), st.booleans())  # fmt: skip
def test_frontend_framer_compiled_is_pure(parts, cuts, limit, startup, mangle):
    compiled, pure = _twins("proxy.pgwire.framing")
    data = b"".join(parts)
    if mangle and data:
        data = data[: len(data) // 2] + b"\xff\x00\x00" + data[len(data) // 2 :]
    chunks = _split(data, cuts)
    got = _framed(compiled.FrontendFramer(startup=startup, max_message_length=limit), chunks)
    want = _framed(pure.FrontendFramer(startup=startup, max_message_length=limit), chunks)
    assert got == want


@settings(max_examples=150, deadline=None)
@given(st.one_of(backend_stream, st.lists(GARBAGE, max_size=3)), st.lists(st.integers(0, 4000), max_size=8),
       st.sampled_from([1 << 30, 64]), st.sampled_from([b"", b"S", b"N", b"E", b"x"]))  # fmt: skip
def test_backend_framer_compiled_is_pure(parts, cuts, limit, answer):
    compiled, pure = _twins("proxy.pgwire.framing")
    chunks = _split(answer + b"".join(parts), cuts)
    framers = [m.BackendFramer(max_message_length=limit) for m in (compiled, pure)]
    if answer:
        for f in framers:
            f.expect_encryption_response()
    assert _framed(framers[0], chunks) == _framed(framers[1], chunks)


@pytest.mark.parametrize("word", [0, 3, 4, 5, 0x7FFFFFFF, 0x80000000, 0x80000004, 0xFFFFFFFF, 0x40000000, 0x40000001])
@pytest.mark.parametrize("limit", [1 << 30, 64])
def test_framer_length_words_compiled_are_pure(word, limit):
    # The compiled framer assembles the length word from its bytes (signed, as the protocol's
    # Int32); every edge of that arithmetic gives the pure twin's messages and errors.
    compiled, pure = _twins("proxy.pgwire.framing")
    data = b"S\0\0\0\x04Q" + word.to_bytes(4, "big") + b"SELECT 1\0"
    for cut in ([], [7], [5, 9]):
        chunks = _split(data, cut)
        got = _framed(compiled.FrontendFramer(startup=False, max_message_length=limit), chunks)
        assert got == _framed(pure.FrontendFramer(startup=False, max_message_length=limit), chunks)
        got = _framed(compiled.BackendFramer(max_message_length=limit), chunks)
        assert got == _framed(pure.BackendFramer(max_message_length=limit), chunks)


def test_framer_arguments_are_checked_alike():
    compiled, pure = _twins("proxy.pgwire.framing")
    for limit in (3, -1):
        same(lambda: compiled.BackendFramer(max_message_length=limit), lambda: pure.BackendFramer(max_message_length=limit))
    same(lambda: compiled.BackendFramer().feed(None), lambda: pure.BackendFramer().feed(None))


# -- the client's whole packets (scan.whole_packet) ----------------------------------------------


def _packets():
    """The packets data_received runs unframed, their near misses, and cuts of both."""
    from proxy.pgwire import encode

    sql = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
    name = st.sampled_from(["", "", "s1"])
    whole = st.builds(lambda s, st_name, portal, d, rows: encode.parse(st_name, s) + encode.bind(portal, st_name)
                      + (encode.describe(d, "") if d else b"") + encode.execute("", rows) + encode.sync(),
                      sql, name, name, st.sampled_from(["", "P", "S"]), st.sampled_from([0, 0, 5]))  # fmt: skip
    # A Query's string with NULs anywhere (only one at its end is a whole Query).
    query = st.one_of(sql.map(encode.query), st.binary(max_size=20).map(lambda b: b"Q" + len(b + b"1234").to_bytes(4, "big") + b))
    base = st.one_of(whole, query, st.tuples(whole, query).map(b"".join))
    cut = st.tuples(base, st.integers(0, 200)).map(lambda p: p[0][: p[1]])
    flipped = st.tuples(base, st.integers(0, 200), st.integers(0, 255)).map(
        lambda p: p[0][: p[1]] + bytes((p[2],)) + p[0][p[1] + 1 :] if p[0] else p[0])  # fmt: skip
    return st.one_of(base, cut, flipped, GARBAGE)


@settings(max_examples=600)
@given(_packets())
def test_whole_packet_compiled_is_pure(data):
    compiled, pure = _twins("proxy.pgwire.scan")
    same(compiled.whole_packet, pure.whole_packet, data)
