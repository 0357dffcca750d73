"""PostgreSQL text-format values as the gatherer compares and combines them (pure).

Rows from the shards arrive as the wire's text format plus each column's type OID (from the
RowDescription). `sort_key(oid, text)` turns a value into something Python orders the way
PostgreSQL's default btree operator class does; `numeric_avg_text` and `float8_text` format
combined values the way the server prints them (numeric_div's result scale, the shortest
round-trip float text). Output of timestamps is assumed in DateStyle ISO (the default).

Text compares by code point, which is PostgreSQL's order only under the "C" (or "POSIX")
collation: the gatherer refuses to order text across shards otherwise (see gather.py).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

__all__ = [
    "BOOL", "DATE", "FLOAT4", "FLOAT8", "INT2", "INT4", "INT8", "NUMERIC", "OID", "TEXT_OIDS",
    "TIMESTAMP", "TIMESTAMPTZ", "UUID",
    "Unorderable", "float_text", "numeric_avg_text", "orderable", "parse_numeric", "sort_key",
]

BOOL, INT8, INT2, INT4, OID = 16, 20, 21, 23, 26
FLOAT4, FLOAT8, NUMERIC = 700, 701, 1700
DATE, TIMESTAMP, TIMESTAMPTZ, UUID = 1082, 1114, 1184, 2950
BPCHAR = 1042
TEXT_OIDS = frozenset({25, 1043, BPCHAR, 19})  # text, varchar, bpchar, name
_INTS = frozenset({INT2, INT4, INT8, OID})
_ORDERABLE = _INTS | TEXT_OIDS | {BOOL, FLOAT4, FLOAT8, NUMERIC, DATE, TIMESTAMP, TIMESTAMPTZ, UUID}

# numeric.c: NUMERIC_MIN_SIG_DIGITS, the display scale limits, and base-10000 digits.
_MIN_SIG_DIGITS = 16
_MAX_DISPLAY_SCALE = 1000
_DEC_DIGITS = 4


class Unorderable(ValueError):
    """A value the gatherer cannot order or combine exactly like PostgreSQL."""


def orderable(oid: int) -> bool:
    return oid in _ORDERABLE


def parse_numeric(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise Unorderable(f"not a numeric: {text!r}") from None


def _float(text: str) -> float:
    low = text.lower()
    if low in ("infinity", "-infinity", "nan"):
        return float(low.replace("infinity", "inf"))
    return float(text)


def _timestamp(text: str, oid: int) -> tuple[int, Any]:
    if text == "infinity":
        return (1, 0)
    if text == "-infinity":
        return (-1, 0)
    if text.endswith(" BC") or len(text.split("-", 1)[0]) > 4:
        raise Unorderable(f"timestamp {text!r} outside years 1-9999")
    try:
        if oid == DATE:
            return (0, dt.date.fromisoformat(text))
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Unorderable(f"not an ISO timestamp: {text!r} (DateStyle must be ISO)") from None
    return (0, value)


def sort_key(oid: int, text: str) -> Any:
    """A Python value ordered as PostgreSQL orders the type (NaN above every number)."""
    if oid in _INTS:
        return int(text)
    if oid == NUMERIC:
        d = parse_numeric(text)
        return (1, Decimal(0)) if d.is_nan() else (0, d)
    if oid in (FLOAT4, FLOAT8):
        f = _float(text)
        return (1, 0.0) if math.isnan(f) else (0, f)
    if oid == BPCHAR:
        return text.rstrip(" ")  # character(n) compares without its padding
    if oid in TEXT_OIDS or oid == UUID:
        return text
    if oid == BOOL:
        return text == "t"
    if oid in (DATE, TIMESTAMP, TIMESTAMPTZ):
        return _timestamp(text, oid)
    raise Unorderable(f"values of type oid {oid} cannot be ordered across shards")


def group_key(oid: int, text: str | None) -> Any:
    """What GROUP BY compares: numbers by value (1.0 = 1.00), everything else by its text."""
    if text is None:
        return None
    if oid == BPCHAR:
        return text.rstrip(" ")
    if oid in _INTS:
        return int(text)
    if oid == NUMERIC:
        d = parse_numeric(text)
        return "NaN" if d.is_nan() else d
    if oid in (FLOAT4, FLOAT8):
        f = _float(text)
        return "NaN" if math.isnan(f) else (0.0 if f == 0 else f)
    return text


def _weight_first(x: Decimal) -> tuple[int, int]:
    """numeric.c's weight (base-10000 exponent) and first base-10000 digit of |x| (0 for 0)."""
    if x == 0:
        return 0, 0
    x = abs(x)
    weight = x.adjusted() // _DEC_DIGITS
    first = int(x.scaleb(-weight * _DEC_DIGITS))
    return weight, first


def _dscale(x: Decimal) -> int:
    exp = x.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def numeric_avg_text(total: Decimal, count: int) -> str:
    """``total / count`` printed as PostgreSQL's numeric division prints it (select_div_scale)."""
    if total.is_nan():
        return "NaN"
    if total.is_infinite():
        return "Infinity" if total > 0 else "-Infinity"
    w1, f1 = _weight_first(total)
    divisor = Decimal(count)
    w2, f2 = _weight_first(divisor)
    qweight = w1 - w2
    if f1 <= f2:
        qweight -= 1
    rscale = _MIN_SIG_DIGITS - qweight * _DEC_DIGITS
    rscale = max(rscale, _dscale(total), 0)
    rscale = min(rscale, _MAX_DISPLAY_SCALE)
    with localcontext() as ctx:
        ctx.prec = 2 * _MAX_DISPLAY_SCALE + 200
        q = (total / divisor).quantize(Decimal(1).scaleb(-rscale), rounding=ROUND_HALF_UP)
    return format(q, "f")


def float_text(value: float, oid: int = FLOAT8) -> str:
    """A float as PostgreSQL prints float8 (or float4): shortest round-trip digits, exponent
    form below 1e-4 and from 1e15 (float4: 1e6) up, "Infinity", "NaN"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if oid == FLOAT4:
        digits = _shortest_float4(value)
        limit = 6  # FLT_DIG
    else:
        digits = repr(value)
        limit = 15  # DBL_DIG
    d = Decimal(digits)
    if d == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, ds, exp = d.normalize().as_tuple()
    assert isinstance(exp, int)
    mant = "".join(map(str, ds))
    point = len(mant) + exp  # the decimal exponent of the first digit is point - 1
    e10 = point - 1
    neg = "-" if sign else ""
    if e10 < -4 or e10 >= limit:
        body = mant[0] + ("." + mant[1:] if len(mant) > 1 else "")
        return f"{neg}{body}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if exp >= 0:
        return neg + mant + "0" * exp
    if point > 0:
        return f"{neg}{mant[:point]}.{mant[point:]}"
    return f"{neg}0.{'0' * -point}{mant}"


def _shortest_float4(value: float) -> str:
    target = struct.unpack(">f", struct.pack(">f", value))[0]
    for prec in range(1, 10):
        text = f"{target:.{prec}g}"
        try:
            if struct.unpack(">f", struct.pack(">f", float(text)))[0] == target:
                return text
        except OverflowError:  # rounded past FLT_MAX: more digits needed
            continue
    return f"{target:.9g}"
