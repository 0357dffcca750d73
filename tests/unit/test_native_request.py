"""Differential tests of the request parser's compiled half (proxy/http1/_request.py: `RequestCore`,
the base of `RequestParser`, an extension type when compiled): hypothesis drives a `RequestParser`
on the compiled `RequestCore` and one on its pure-Python twin (parser.py loaded again over
`proxy._native.load_pure`'s module) through the same calls, as the lb's client connection makes
them (`feed_simple` first, `feed` when it declines, then `feed_eof`), and requires the same answers
after every call, errors (message, status hint, the events before them) included: simple requests
repeated (the per-connection memo), near misses, request streams in any pieces, mutated ones and
any bytes. Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from proxy.http1 import parser as compiled_parser
from tests.unit.test_http1_fuzz import GARBAGE, mutated, pieces, request_stream
from tests.unit.test_http1_simple import near_simple_requests, requests
from tests.unit.test_native_response import feed_trace

_PURE: list = []


def _twins():
    """parser.py over the compiled RequestCore, and parser.py over the pure one."""
    core = sys.modules["proxy.http1._request"]
    if _native.pure_requested() or not core.__file__.endswith(".so"):
        pytest.skip("proxy.http1._request is not compiled here")
    if not _PURE:
        pure_core = _native.load_pure("proxy.http1._request")
        sys.modules["proxy.http1._request"] = pure_core
        try:
            spec = importlib.util.spec_from_file_location("proxy.http1.parser__purecore", compiled_parser.__file__)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        finally:
            sys.modules["proxy.http1._request"] = core
        assert mod.RequestParser.__mro__[1] is pure_core.RequestCore
        assert compiled_parser.RequestParser.__mro__[1] is core.RequestCore
        _PURE.append(mod)
    return compiled_parser, _PURE[0]


def trace(mod, chunks: list[bytes], simple: bool, max_head: int) -> list:
    p = mod.RequestParser(max_header_bytes=max_head)
    out = feed_trace(p, chunks, simple)
    # What feed_simple keeps between calls, as the full path left it.
    out.append((p._state, p._in_msg, bytes(p._pending), p._last_simple, p._last_head))
    return out


def same(chunks: list[bytes], simple: bool = True, max_head: int = 8192) -> None:
    compiled, pure = _twins()
    assert trace(compiled, chunks, simple, max_head) == trace(pure, chunks, simple, max_head)


MAX_HEADS = st.sampled_from([8192, 8192, 60, 0])
ANY_REQUEST = st.one_of(requests(), near_simple_requests())


@settings(max_examples=200, deadline=None)
@given(st.lists(ANY_REQUEST, min_size=1, max_size=4), st.lists(st.integers(0, 7), min_size=1, max_size=12), MAX_HEADS)
def test_simple_requests_repeated_compiled_is_pure(pool, picks, max_head):
    # Repeats hit the memo; a near miss after a repeat must not.
    same([pool[i % len(pool)] for i in picks], True, max_head)


@settings(max_examples=200, deadline=None)
@given(request_stream(keep_alive=True), st.lists(st.integers(0, 10_000), max_size=6), st.sampled_from(GARBAGE + [b""]),
       st.booleans())
def test_request_streams_in_pieces_compiled_is_pure(stream, cuts, garbage, simple):
    wire, _ = stream
    same(pieces(wire + garbage, cuts), simple)
    same([wire, wire], simple)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.lists(st.integers(0, 10_000), max_size=6))
def test_mutated_requests_compiled_is_pure(data, cuts):
    base = data.draw(ANY_REQUEST)
    bad = data.draw(mutated(base))
    same([base, bad, base] + pieces(bad, cuts))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_any_bytes_compiled_is_pure(chunks):
    same(chunks)


def test_the_simple_entry_runs_compiled():
    """Compiled, feed_simple is the extension type's C method (called in C by the lb's client
    connection), and the fields it reads are member descriptors for parser.py's interpreted code."""
    compiled, _ = _twins()
    core = compiled.RequestParser.__mro__[1]
    assert type(core.__dict__["feed_simple"]).__name__ != "function"
    for name in ("_state", "_in_msg", "_pending", "_max_head", "_last_simple", "_last_head"):
        assert type(core.__dict__[name]).__name__ == "member_descriptor", name
