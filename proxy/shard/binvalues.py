"""PostgreSQL values from their text format to their binary wire format (pure).

The gatherer merges rows in text (values.py compares and combines text values). A client that
asked for binary results (asyncpg asks binary for every type it knows) gets the merged values
re-encoded here, as the type's `*send` function would write them: `to_binary(oid, text)`.

Covered: bool, bytea (hex output, the default `bytea_output`), "char", name, int2/int4/int8, oid,
text, varchar, bpchar, json, jsonb, float4/float8, numeric (NaN and +-Infinity included), date,
time, timestamp, timestamptz (DateStyle ISO; timestamptz text carries its UTC offset), uuid.
Anything else raises `Unencodable`: the router then refuses the statement with 0A000 naming the
type, never sends bytes the client would misread. Text values are taken as UTF-8 (the router's
client_encoding).

`tests/integration/test_shard_extended_scatter.py` checks the bytes against a real server's own
`*_send` functions for random values.
"""

from __future__ import annotations

import datetime as dt
import re
import struct

__all__ = ["BINARY_OIDS", "Unencodable", "to_binary"]

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID, JSON = 16, 17, 18, 19, 20, 21, 23, 25, 26, 114
FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME = 700, 701, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1114, 1184, 1700, 2950, 3802

_EPOCH_DATE = dt.date(2000, 1, 1).toordinal()  # PostgreSQL's epoch for dates and timestamps
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)
_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN = 0x0000, 0x4000, 0xC000
_NUMERIC_PINF, _NUMERIC_NINF = 0xD000, 0xF000
_NUMERIC_TEXT = re.compile(r"\A(-?)(\d*)(?:\.(\d*))?\Z")
_TIMESTAMP = re.compile(
    r"\A(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?\Z")
_TIME = re.compile(r"\A(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?\Z")


class Unencodable(ValueError):
    """A value (or a type) this module cannot write in binary exactly as the server would."""


def _int(text: str, size: int) -> bytes:
    try:
        v = int(text)
    except ValueError:
        raise Unencodable(f"not an integer: {text!r}") from None
    try:
        return v.to_bytes(size, "big", signed=True)
    except OverflowError:
        raise Unencodable(f"integer {text} out of range") from None


def _oid(text: str) -> bytes:
    try:
        return int(text).to_bytes(4, "big")
    except (ValueError, OverflowError):
        raise Unencodable(f"not an oid: {text!r}") from None


def _float(text: str, fmt: str) -> bytes:
    low = text.lower()
    try:
        v = float(low.replace("infinity", "inf")) if low in ("infinity", "-infinity", "nan") else float(text)
        return struct.pack(fmt, v)
    except (ValueError, OverflowError):
        raise Unencodable(f"not a float: {text!r}") from None


def numeric_binary(text: str) -> bytes:
    """numeric_send's bytes for numeric_out's text."""
    head = struct.Struct("!hhHH")
    if text == "NaN":
        return head.pack(0, 0, _NUMERIC_NAN, 0)
    # numeric_send reads the dscale of an infinity from its header's bits: 32 (numeric.c)
    if text == "Infinity":
        return head.pack(0, 0, _NUMERIC_PINF, 32)
    if text == "-Infinity":
        return head.pack(0, 0, _NUMERIC_NINF, 32)
    m = _NUMERIC_TEXT.match(text)
    if m is None or not (m.group(2) or m.group(3)):
        raise Unencodable(f"not a numeric: {text!r}")
    sign = _NUMERIC_NEG if m.group(1) else _NUMERIC_POS
    whole, frac = m.group(2) or "0", m.group(3) or ""
    dscale = len(frac)
    whole = whole.lstrip("0")
    whole = "0" * (-len(whole) % 4) + whole
    frac = frac + "0" * (-len(frac) % 4)
    digits = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)] + \
        [int(frac[i : i + 4]) for i in range(0, len(frac), 4)]
    weight = len(whole) // 4 - 1
    while digits and digits[0] == 0:
        digits.pop(0)
        weight -= 1
    while digits and digits[-1] == 0:
        digits.pop()
    if not digits:
        weight, sign = 0, _NUMERIC_POS  # zero: no digits, weight 0, never negative
    if len(digits) > 0x7FFF or not -0x8000 <= weight <= 0x7FFF or dscale > 0x3FFF:
        raise Unencodable(f"numeric {text[:40]} out of range")
    return head.pack(len(digits), weight, sign, dscale) + struct.pack(f"!{len(digits)}H", *digits)


def _micros(frac: str | None) -> int:
    return int((frac or "").ljust(6, "0")) if frac else 0


def _timestamp(text: str, oid: int) -> bytes:
    if text == "infinity":
        return struct.pack("!q", _I64_MAX)
    if text == "-infinity":
        return struct.pack("!q", _I64_MIN)
    m = _TIMESTAMP.match(text)
    if m is None or (oid == TIMESTAMP) != (m.group(8) is None):
        raise Unencodable(f"not an ISO {'timestamptz' if oid == TIMESTAMPTZ else 'timestamp'}: {text!r} "
                          "(DateStyle must be ISO; BC and years past 9999 are not encoded)")
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    try:
        days = dt.date(y, mo, d).toordinal() - _EPOCH_DATE
    except ValueError:
        raise Unencodable(f"not a date: {text!r}") from None
    us = ((days * 24 + h) * 60 + mi) * 60 + s
    if m.group(8) is not None:
        off = int(m.group(9)) * 3600 + int(m.group(10) or 0) * 60 + int(m.group(11) or 0)
        us -= off if m.group(8) == "+" else -off
    return struct.pack("!q", us * 1_000_000 + _micros(m.group(7)))


def _date(text: str) -> bytes:
    if text == "infinity":
        return struct.pack("!i", _I32_MAX)
    if text == "-infinity":
        return struct.pack("!i", _I32_MIN)
    if not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        raise Unencodable(f"not an ISO date: {text!r}")
    try:
        return struct.pack("!i", dt.date.fromisoformat(text).toordinal() - _EPOCH_DATE)
    except ValueError:
        raise Unencodable(f"not a date: {text!r}") from None


def _time(text: str) -> bytes:
    m = _TIME.match(text)
    if m is None:
        raise Unencodable(f"not a time: {text!r}")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return struct.pack("!q", ((h * 60 + mi) * 60 + s) * 1_000_000 + _micros(m.group(4)))


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise Unencodable("bytea in escape format (set bytea_output = hex)")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise Unencodable("bytea: bad hex") from None


def _uuid(text: str) -> bytes:
    h = text.replace("-", "")
    if len(h) != 32:
        raise Unencodable(f"not a uuid: {text!r}")
    try:
        return bytes.fromhex(h)
    except ValueError:
        raise Unencodable(f"not a uuid: {text!r}") from None


def _bool(text: str) -> bytes:
    if text not in ("t", "f"):
        raise Unencodable(f"not a bool: {text!r}")
    return b"\x01" if text == "t" else b"\x00"


def _char(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 1:
        if raw[:1] == b"\\" and len(raw) == 4:  # charout writes a high byte as \ooo
            return bytes((int(raw[1:], 8),))
        raise Unencodable(f'not a "char": {text!r}')
    return raw


_ENCODERS = {
    BOOL: _bool, BYTEA: _bytea, CHAR: _char, INT2: lambda t: _int(t, 2), INT4: lambda t: _int(t, 4),
    INT8: lambda t: _int(t, 8), OID: lambda t: _oid(t),
    FLOAT4: lambda t: _float(t, "!f"), FLOAT8: lambda t: _float(t, "!d"), NUMERIC: numeric_binary,
    DATE: _date, TIME: _time, TIMESTAMP: lambda t: _timestamp(t, TIMESTAMP),
    TIMESTAMPTZ: lambda t: _timestamp(t, TIMESTAMPTZ), UUID: _uuid,
    JSONB: lambda t: b"\x01" + t.encode("utf-8"),
}  # fmt: skip
_AS_TEXT = frozenset({NAME, TEXT, JSON, BPCHAR, VARCHAR})
BINARY_OIDS = frozenset(_ENCODERS) | _AS_TEXT


def to_binary(oid: int, text: str) -> bytes:
    """The binary wire value of type `oid` whose text output is `text`; Unencodable otherwise."""
    if oid in _AS_TEXT:
        return text.encode("utf-8")
    enc = _ENCODERS.get(oid)
    if enc is None:
        raise Unencodable(f"values of type oid {oid} in binary format")
    return enc(text)
