"""bindmsg.py (Bind/Execute read whole, split INSERT parameters renumbered) and binvalues.py
(text to binary values), with hypothesis. The server-side parity of binvalues is in
tests/integration/test_shard_extended_scatter.py (against PostgreSQL's own *_send functions)."""

from __future__ import annotations

import struct
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import ast, parse_sql
from pglast.stream import RawStream

from proxy.pgwire import encode
from proxy.pgwire.errors import PgProtocolError
from proxy.shard.binvalues import Unencodable, numeric_binary, to_binary
from proxy.shard.bindmsg import Bind, parse_bind, parse_execute, renumber_params
from proxy.shard.keys import walk_nodes

names = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=12)
values = st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=8)


@given(portal=names, stmt=names, vals=values, data=st.data())
def test_bind_round_trips(portal: str, stmt: str, vals: list[bytes | None], data: st.DataObject) -> None:
    nf = data.draw(st.sampled_from([0, 1, len(vals)]))
    pf = data.draw(st.lists(st.sampled_from([0, 1]), min_size=nf, max_size=nf))
    rf = data.draw(st.lists(st.sampled_from([0, 1]), max_size=5))
    raw = encode.bind(portal, stmt, vals, param_formats=pf, result_formats=rf)
    b = parse_bind(raw)
    assert b == Bind(portal, stmt, tuple(pf), tuple(vals), tuple(rf))
    assert b.encode(portal=portal, statement=stmt) == raw
    for i in range(len(vals)):
        assert b.param_format(i) == (pf[0] if nf == 1 else pf[i] if nf else 0)


@given(vals=st.lists(st.binary(max_size=6), min_size=1, max_size=8), data=st.data())
def test_bind_subset_keeps_each_values_format(vals: list[bytes], data: st.DataObject) -> None:
    pf = data.draw(st.lists(st.sampled_from([0, 1]), min_size=len(vals), max_size=len(vals)))
    b = Bind("", "s", tuple(pf), tuple(vals), (1,))
    numbers = data.draw(st.lists(st.integers(1, len(vals)), unique=True))
    sub = b.subset(numbers)
    assert sub.values == tuple(vals[n - 1] for n in numbers)
    assert [sub.param_format(i) for i in range(len(numbers))] == [pf[n - 1] for n in numbers]


@given(st.binary(max_size=60))
def test_malformed_bind_and_execute_raise_protocol_errors(junk: bytes) -> None:
    raw = b"B" + struct.pack("!i", len(junk) + 4) + junk
    try:
        parse_bind(raw)
    except PgProtocolError as exc:
        assert exc.sqlstate == "08P01"
    try:
        parse_execute(b"E" + struct.pack("!i", len(junk) + 4) + junk)
    except PgProtocolError as exc:
        assert exc.sqlstate == "08P01"


def test_execute_is_read() -> None:
    e = parse_execute(encode.execute("p1", 50))
    assert (e.portal, e.max_rows) == ("p1", 50)
    with pytest.raises(PgProtocolError):
        parse_bind(encode.bind("", "", [b"1"], param_formats=[0, 1]))  # 2 formats for 1 value


@given(n_rows=st.integers(2, 6), data=st.data())
def test_renumbered_rows_keep_their_own_parameters(n_rows: int, data: st.DataObject) -> None:
    sql = "INSERT INTO t (k, v) VALUES " + ", ".join(f"(${2 * i + 1}, ${2 * i + 2})" for i in range(n_rows))
    stmt = parse_sql(sql)[0].stmt
    keep = data.draw(st.lists(st.integers(0, n_rows - 1), min_size=1, unique=True).map(sorted))
    stmt.selectStmt.valuesLists = tuple(stmt.selectStmt.valuesLists[i] for i in keep)
    stmt, numbers = renumber_params(stmt)
    assert numbers == tuple(n for i in keep for n in (2 * i + 1, 2 * i + 2))
    refs = [n.number for n in walk_nodes(stmt) if isinstance(n, ast.ParamRef)]
    assert refs == list(range(1, len(numbers) + 1))
    assert RawStream()(stmt).count("$") == len(numbers)


def _numeric_value(raw: bytes) -> Decimal:
    """An independent reading of numeric_send's format (the test's own decoder)."""
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", raw)
    digits = struct.unpack_from(f"!{ndigits}H", raw, 8)
    assert all(0 <= d < 10000 for d in digits)
    if ndigits:
        assert digits[0] != 0 and digits[-1] != 0  # stripped, as the server stores them
    with localcontext() as ctx:
        ctx.prec = 2000
        value = sum((Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0))
        return -value if sign == 0x4000 else value


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(lambda d: abs(d.adjusted()) < 200))
def test_numeric_binary_holds_the_value_and_its_scale(d: Decimal) -> None:
    text = format(d, "f")
    raw = numeric_binary(text)
    assert _numeric_value(raw) == Decimal(text)
    assert struct.unpack_from("!H", raw, 6)[0] == (len(text.split(".")[1]) if "." in text else 0)


@given(st.integers(-(2**63), 2**63 - 1))
def test_int8_binary(n: int) -> None:
    assert to_binary(20, str(n)) == struct.pack("!q", n)
    if not -(2**31) <= n < 2**31:
        with pytest.raises(Unencodable):
            to_binary(23, str(n))


@given(st.text(max_size=30))
def test_garbage_text_is_refused_never_misencoded(text: str) -> None:
    for oid in (16, 17, 20, 21, 23, 26, 700, 701, 1082, 1083, 1114, 1184, 1700, 2950):
        try:
            to_binary(oid, text)
        except Unencodable:
            pass
    with pytest.raises(Unencodable):
        to_binary(1186, "1 day")  # interval: not encoded
