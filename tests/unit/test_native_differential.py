"""Differential tests of the native layer: hypothesis feeds the same inputs to the compiled module
and to its pure-Python twin (`proxy._native.load_pure`) and requires identical results, errors
included. Skipped where the module is not compiled (the pure pass, a checkout nobody built;
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
