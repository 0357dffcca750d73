"""Sticky cookies: known vector, forgery rejection, never raising, the codec's cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.lb import sticky
from proxy.lb.sticky import MAX_VALUE_LEN, StickyCodec, sign, verify

SECRET = b"0123456789abcdef"
OTHER = b"fedcba9876543210"

# Computed with OpenSSL, not with this module:
#   printf 'tierproxy/sticky/v1\0web1.eu' | openssl dgst -sha256 -mac HMAC \
#     -macopt key:0123456789abcdef -binary | head -c 16 | base64 | tr '+/' '-_' | tr -d '='
VECTOR = "web1.eu.9CfbUj33F5tmxQtt5V8ayQ"


def test_known_vector_and_dotted_names():
    assert sign("web1.eu", SECRET) == VECTOR
    assert verify(VECTOR, SECRET) == "web1.eu"


@pytest.mark.parametrize("backend", ["web1", "a.b.c", "10.0.0.7:8080", "x"])
def test_round_trip(backend):
    value = sign(backend, SECRET)
    assert value.startswith(backend + ".")
    assert len(value) == len(backend) + 1 + 22
    assert verify(value, SECRET) == backend


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "web1",
        "web1.",
        ".9CfbUj33F5tmxQtt5V8ayQ",
        "web1.9CfbUj33F5tmxQtt5V8ayQ",  # a real tag moved to another backend
        "web1.eu.9CfbUj33F5tmxQtt5V8ay",  # truncated
        "web1.eu.9CfbUj33F5tmxQtt5V8ayQQ",  # extended
        "web1.eu.9CfbUj33F5tmxQtt5V8ayR",  # last character flipped
        "web1.eu.9CfbUj33F5tmxQtt5V8ay=",
        "web1.eu.9CfbUj33F5tmxQtt5V8ayé",
        "wéb1.eu.9CfbUj33F5tmxQtt5V8ayQ",
        "web 1.9CfbUj33F5tmxQtt5V8ayQ",
        "web1\ud800.9CfbUj33F5tmxQtt5V8ayQ",  # lone surrogate: not encodable
        "a" * 10_000 + ".9CfbUj33F5tmxQtt5V8ayQ",
    ],
)
def test_forged_or_garbled_values_are_refused(value):
    assert verify(value, SECRET) is None


def test_wrong_secret_is_refused():
    assert verify(VECTOR, OTHER) is None


def test_non_str_input_is_refused():
    assert verify(None, SECRET) is None  # type: ignore[arg-type]
    assert verify(VECTOR.encode(), SECRET) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["", "web 1", "a;b", 'a"b', "a,b", "wéb", "a\\b", "x" * 300])
def test_sign_refuses_names_unsafe_in_a_cookie(backend):
    with pytest.raises(ValueError):
        sign(backend, SECRET)


def test_short_secret_is_refused():
    with pytest.raises(ValueError):
        sign("web1", b"short")
    with pytest.raises(ValueError):
        StickyCodec(b"short", "lb")


@given(st.text(max_size=MAX_VALUE_LEN + 40))
def test_verify_never_raises_on_text(value):
    assert verify(value, SECRET) is None or value == sign(verify(value, SECRET), SECRET)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.from_regex(r"[!-~]{1,20}\.[A-Za-z0-9_=-]{20,24}", fullmatch=True))
def test_codec_decode_never_raises(value):
    c = StickyCodec(SECRET, "lb")
    assert c.decode(value) is None or sign(c.decode(value), SECRET) == value


@given(st.from_regex(r"[!#-+\--:<-\[\]-~]{1,40}", fullmatch=True))
def test_every_cookie_safe_name_round_trips(backend):
    assert verify(sign(backend, SECRET), SECRET) == backend


# -- codec ------------------------------------------------------------------------------------


def test_codec_caches_only_valid_values(monkeypatch):
    c = StickyCodec(SECRET, "lb", cache_size=3)
    calls = []
    real = sticky.verify
    monkeypatch.setattr(sticky, "verify", lambda v, s: calls.append(v) or real(v, s))
    value = c.encode("web1")
    assert [c.decode(value) for _ in range(5)] == ["web1"] * 5
    assert calls == [value]  # verified once, then served from the cache
    assert c.decode("web1.AAAAAAAAAAAAAAAAAAAAAA") is None
    assert c.decode("web1.AAAAAAAAAAAAAAAAAAAAAA") is None
    assert c.cached == 1  # forgeries are not cached


def test_codec_cache_is_bounded_oldest_first():
    c = StickyCodec(SECRET, "lb", cache_size=3)
    values = [c.encode(f"w{i}") for i in range(5)]
    for v in values:
        c.decode(v)
    assert c.cached == 3
    assert all(c.decode(v) == f"w{i}" for i, v in enumerate(values))  # evicted ones re-verify


def test_codec_unhashable_garbage_does_not_raise():
    c = StickyCodec(SECRET, "lb")
    assert c.decode(["x"]) is None  # type: ignore[arg-type]


def test_codec_from_header():
    c = StickyCodec(SECRET, "lb")
    v = c.encode("web1.eu")
    assert v == VECTOR
    assert c.from_header(f"a=1; lb={v}; b=2") == "web1.eu"
    assert c.from_header(f'lb="{v}"') == "web1.eu"
    assert c.from_header(f"lb=forged.AAAAAAAAAAAAAAAAAAAAAA; lb={v}") == "web1.eu"
    assert c.from_header(f"xlb={v}") is None
    assert c.from_header("a=1") is None
    assert c.from_header("") is None


def test_codec_set_cookie():
    c = StickyCodec(SECRET, "lb")
    assert c.set_cookie("web1.eu") == f"lb={VECTOR}; Path=/; HttpOnly; SameSite=Lax"
    assert (
        c.set_cookie("web1.eu", path="/app", max_age=3600, secure=True)
        == f"lb={VECTOR}; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
    )
    with pytest.raises(ValueError):
        c.set_cookie("web1", path="/; Domain=evil.example")


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a=b", "é"])
def test_codec_refuses_bad_cookie_names(name):
    with pytest.raises(ValueError):
        StickyCodec(SECRET, name)
