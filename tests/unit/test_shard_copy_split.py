"""copy_split.py: COPY FROM STDIN rows split by their key, in any chunking (hypothesis).

Rows are written here as PostgreSQL's COPY TO writes them (text: backslash escapes; CSV: quoted
when needed), by the test's own encoder; the splitter must give back each row's bytes and key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import parse_sql

from proxy.shard.copy_split import CopyDataError, CopyOptions, RowSplitter, copy_options

values = st.one_of(st.none(), st.sampled_from(["\\N", "\\.", ""]),
                   st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF)
                           | st.sampled_from(["\\", "\t", "\n", "\r", ",", '"']), max_size=8))
rows = st.lists(st.lists(values, min_size=1, max_size=4), min_size=0, max_size=12)


def _text_field(v: str | None) -> bytes:
    if v is None:
        return b"\\N"
    out = v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return out.encode()


def _csv_field(v: str | None) -> bytes:
    if v is None:
        return b""
    if v == "" or any(c in v for c in ',"\n\r') or v == "\\.":
        return ('"' + v.replace('"', '""') + '"').encode()
    return v.encode()


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


@given(table=rows, csv=st.booleans(), crlf=st.booleans(), header=st.booleans(), last_eol=st.booleans(),
       cuts=st.lists(st.integers(0, 400), max_size=8), key_index=st.integers(0, 3))
def test_rows_and_keys_come_back_in_any_chunking(table: list[list[str | None]], csv: bool, crlf: bool, header: bool,
                                                 last_eol: bool, cuts: list[int], key_index: int) -> None:
    width = max((len(r) for r in table), default=1)
    key_index = min(key_index, width - 1)
    table = [r + [""] * (width - len(r)) for r in table]
    eol = b"\r\n" if crlf else b"\n"
    field = _csv_field if csv else _text_field
    sep = b"," if csv else b"\t"
    lines = [sep.join(field(v) for v in r) for r in table]
    head = [sep.join(b"c%d" % i for i in range(width))] if header else []
    data = eol.join(head + lines)
    if lines and lines[-1] == b"":
        last_eol = True  # an empty last line without its end is no row, on a server too
    if (head or lines) and last_eol:
        data += eol
    opts = CopyOptions(csv=csv, delimiter=sep, null=b"" if csv else b"\\N", header=header)
    sp = RowSplitter(opts, key_index)
    got = []
    for chunk in _chunks(data, cuts):
        got += sp.feed(chunk)
    got += sp.finish()
    assert [r for r, _ in got] == [line + eol if (i < len(lines) - 1 or last_eol) else line
                                   for i, line in enumerate(lines)]
    assert [k for _, k in got] == [None if r[key_index] is None else r[key_index].encode() for r in table]
    if header:
        assert sp.header == head[0] + (eol if lines or last_eol else b"")
    else:
        assert sp.header is None


@given(st.binary(max_size=80), st.booleans())
def test_garbage_gives_rows_or_a_copy_error(junk: bytes, csv: bool) -> None:
    sp = RowSplitter(CopyOptions(csv=csv, delimiter=b"," if csv else b"\t", null=b"" if csv else b"\\N"), 1)
    try:
        sp.feed(junk)
        sp.finish()
    except CopyDataError as exc:
        assert exc.sqlstate == "22P04"


def test_end_marker_and_options() -> None:
    sp = RowSplitter(CopyOptions(), 0)
    assert sp.feed(b"1\ta\n\\.\n2\tb\n") == [(b"1\ta\n", b"1")]
    assert sp.ended and sp.finish() == []
    o = copy_options(parse_sql("COPY t FROM STDIN WITH (FORMAT csv, DELIMITER ';', NULL 'x', HEADER)")[0].stmt)
    assert o == CopyOptions(csv=True, delimiter=b";", null=b"x", header=True)
    sp = RowSplitter(o, 1)
    assert sp.feed(b"a;b\n1;x\n2;\"x\"\n") == [(b"1;x\n", None), (b'2;"x"\n', b"x")]
    bad = copy_options(parse_sql("COPY t FROM STDIN (FORMAT binary)")[0].stmt)
    assert isinstance(bad, CopyDataError) and bad.sqlstate == "0A000"
    with pytest.raises(CopyDataError):
        RowSplitter(CopyOptions(), 2).feed(b"1\t2\n")
    assert RowSplitter(CopyOptions(), 0).feed(b"\\101\\x42c\tz\n") == [(b"\\101\\x42c\tz\n", b"ABc")]
