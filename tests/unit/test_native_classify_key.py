"""The classifier cache's key twins (proxy/dbproxy/classify_key.py): the compiled module keys by a
typed byte scanner (`_key_typed`), the pure one by two regex passes (`_BYTES.key`); both must give
the same key for every input, and the same error for anything that is not bytes.

Hypothesis builds texts from the pieces the key reads or refuses: the DML keywords, standard
strings with doubled quotes, E''/B''/X''/N''/U&'' strings, dollar quotes with and without tags,
-- and /* */ comments (nested, unterminated, holding a tierproxy hint, holding numbers and IN
lists), every numeric form, IN lists, quoted identifiers, parameters, non-ASCII text and invalid
UTF-8, unterminated literals, second statements. The scanner is compared with the regexes twice:
interpreted (in every build, so the pure pass checks it too) and compiled (where it is built).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.ormsql import statements
from proxy import _native
from proxy.dbproxy import classify_key
from tests.unit.test_native_differential import _twins, same

LEADS = ["", " ", "\n", "/* c */ ", "/* tierproxy:primary */", "-- a=1\n", "--tierproxy:replica 7\r", "/**/",
         "\t/* x */\n-- y\n", "/* tierproxy in (1, 2) */ "]
KEYWORDS = ["SELECT", "select", "Select", "WITH", "insert", "UPDATE", "delete", "VALUES", "table"]
# Pieces a key is made of (most texts are only these), and pieces that make a text its own key or
# sit on the edge of a rule (a text gets a few of them).
PIECES = [
    " ", " ", " ", "\n", "\t", "\r", "\x0b", "\x0c", ",", ",", "(", ")", ")", "=", "<>", "*", ".", "+", "-", "/",
    "&", "\\", ":", "::", " x", " a", "E", "e", "_", " ab1", "Id", " tierproxy", "TIERPROXY", "x$", "a$$b",
    "IN", "in", " IN ", " in (", "IN(", ")IN (", " NOT IN (", " In  (", "I", "N", " 0", " 1", "0", "1", "42", "007",
    "1.5", ".5", "1.", "1..2", "1e5", "1E-3", "1e+7", "1e", "1e+", "1e-", "0x1F", "1_000", "3.14e10", "5.e2", "1e5.",
    "1e+5.", "'a'", "''", "'it''s'", "'--'", "'/*'", "'$$'", "'1, 2'", "'tierproxy'", " $$x$$", " $$1$$",
    " $a$ b $a$", " $A$x$a$y$A$", " $_1$'$_1$", " $1", " $12", "\"id\"", "\"Id_1\"", "\"_\"", "-- c\n",
    "-- 12 in (1, 2)\n", "--tierproxy:primary\n", "-- TierProxy 3\r", "/* c */", "/**/", "/***/", "/*/ */",
    "/* tierproxy in (1, 2) 3.5 */", "/*tierproxy*/", "/* x 1 */", "/* in ('', '') */", " (1, 2)", " (0,'',0)",
    " IN ('a', 2, 3.5)", " in (1 , ''  )", " IN (1)", " in (1)", " in ( 2 )", " IN (1, $1)", " IN (-1, 2)",
]  # fmt: skip
# Pieces of pgbench-like statements: numbers and names only (no piece the key must replace but numbers,
# unless an IN list's "(" follows IN and at most one space).
PLAIN = [" ", " ", "\n", ",", " a", " x1", "=", "(", ")", "*", ".", " IN", "IN", " in", " in ", " (", "(", " 1",
         "1", " 2", "0", "1.5", "1e3", " $1", "a$", " IN (1, 2)", " in(1,2)", " IN  (1, 2)", "\tIN\t(3,4)", ")IN (1,2)",
         " in (1)", " In ( 2 , 3 )", ";"]  # fmt: skip
RISKY = [
    ";", "'", "'a''", "'unterminated", "E'\\''", "e'x'", "B'101'", "X'ff'", "N'x'", "U&'d\\0061t'", "U&\"x\"",
    "date'2020-01-01'", "$$", "$a$", "1$", "$", "$tag$", "$$$", "$$$$", "\"\"", "\"a b\"", "\"1a\"", "\"", "--",
    "/*", "*/", "/*/", "/* a /* b */ c */", "/* open", "é", "\u00e9t\u00e9", "\U0001f600", "\x00", "\x7f",
    "selects", "select$", "(", "EXPLAIN ",
]  # fmt: skip
TAILS = ["", ";", " ;", "; ", ";;", "; -- t\n", "; /* tierproxy 9 in (1,2) */", "; SELECT 1", ";\n/* open", " /* end */",
         "\n-- 5\n"]  # fmt: skip


@st.composite
def sql_texts(draw: st.DrawFn) -> bytes:
    lead = "".join(draw(st.lists(st.sampled_from(LEADS), max_size=2)))
    pieces = draw(st.lists(st.sampled_from(PIECES), max_size=24))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from(RISKY)))
    if draw(st.integers(0, 9)) == 0:
        lead = draw(st.sampled_from(RISKY)) + lead
    text = lead + draw(st.sampled_from(KEYWORDS)) + "".join(pieces) + draw(st.sampled_from(TAILS))
    raw = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:  # invalid UTF-8, stray bytes anywhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    return raw


PLAIN_TEXTS = st.tuples(st.sampled_from(KEYWORDS), st.lists(st.sampled_from(PLAIN), max_size=16).map("".join),
                        st.sampled_from(["", ";", " -- c\n", " /* 1 in (1,2) tierproxy */"])).map(
                        lambda t: "".join(t).encode())  # fmt: skip
INPUTS = st.one_of(sql_texts(), sql_texts(), sql_texts(), PLAIN_TEXTS, st.binary(max_size=40))


def _regex(sql):
    return classify_key._BYTES.key(sql)


def _outcome(fn, sql):
    try:
        key = fn(sql)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("raised", type(exc).__name__, str(exc))
    return ("ok", type(key).__name__, key, key is sql)


@settings(max_examples=800, deadline=None)
@given(INPUTS)
@example(b"SELECT * FROM t WHERE id IN (1, 2) AND s IN ('a', 'b') AND x = $$y$$ -- z\n")
@example(b"/* tierproxy:primary in (1,2) */ SELECT 1e+5.")
@example(b"select 1e-5e, 1.e, a$$b, $1.5 from \"t1\" where \"a\"=''")
def test_the_scanner_interpreted_gives_the_regexes_key(sql):
    """The scanner's logic as Python (the compiled twin runs the same source) against the regexes."""
    assert _outcome(classify_key._key_typed, sql) == _outcome(_regex, sql), sql


@settings(max_examples=800, deadline=None)
@given(INPUTS)
def test_literal_key_bytes_compiled_is_pure(sql):
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    assert compiled.COMPILED and compiled.literal_key_bytes is compiled._key_typed
    assert _outcome(compiled.literal_key_bytes, sql) == _outcome(pure.literal_key_bytes, sql), sql


@settings(max_examples=400, deadline=None)
@given(INPUTS.map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_literal_key_over_str_compiled_is_pure(sql):
    """`literal_key` (str: Parse messages' text) goes through the scanner too when compiled."""
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    assert compiled.literal_key is compiled._key_str_typed and pure.literal_key == pure._STR.key
    assert _outcome(compiled.literal_key, sql) == _outcome(pure.literal_key, sql), sql
    assert _outcome(classify_key._key_str_typed, sql) == _outcome(pure.literal_key, sql), sql


def test_orm_statements_keyed_alike():
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    for sql in statements(300):
        assert _outcome(compiled.literal_key_bytes, sql) == _outcome(pure.literal_key_bytes, sql), sql
        assert _outcome(compiled.literal_key, sql.decode()) == _outcome(pure.literal_key, sql.decode()), sql


def test_anything_but_bytes_gets_the_pure_answer_or_error():
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    for arg in (None, "SELECT 1", bytearray(b"SELECT 1"), bytearray(b"SELECT 'x'"), memoryview(b"SELECT 1"), 17,
                type("B", (bytes,), {})(b"SELECT 'a', 2"), type("S", (str,), {})("SELECT 'a', 2"), "SELECT 'é'"):  # fmt: skip
        same(compiled.literal_key_bytes, pure.literal_key_bytes, arg)
        same(compiled.literal_key, pure.literal_key, arg)


@pytest.mark.skipif(_native.pure_requested(), reason="the pure pass")
def test_the_pure_twin_keeps_the_regexes():
    pure = _native.load_pure("proxy.dbproxy.classify_key")
    assert not pure.COMPILED and pure.literal_key_bytes == pure._BYTES.key


@settings(max_examples=200, deadline=None)
@given(st.integers(490, 530), PLAIN_TEXTS, st.sampled_from([b" 1", b" 'x'", b" -- c\n", b"", b" IN (1, 2)"]))
def test_texts_near_the_stack_buffer_keyed_alike(n, text, tail):
    """Compiled, a text up to 512 bytes is keyed in a C array, a longer one in a bytearray: both
    sides of the boundary, with and without anything to replace, against the regexes."""
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    sql = text + b" " * max(0, n - len(text) - len(tail)) + tail
    assert _outcome(compiled.literal_key_bytes, sql) == _outcome(pure.literal_key_bytes, sql), sql
    assert _outcome(classify_key._key_typed, sql) == _outcome(_regex, sql), sql


# The second pass's paths (docs/perf.md, "The classifier's key scan, second pass"): compiled, the
# ASCII test reads eight bytes at a time (a non-ASCII byte in any position of a word, or in the
# tail after the last whole word); the scan steps over runs of plain characters and stops at the
# NUL after the text (so a NUL inside it must be read as a plain character); a literal that is its
# own replacement (0, '', $$$$, --, /**/) is stepped over (the text stays its own key if nothing
# else changes). Texts put each piece at every offset against those words, around a name of 0-17
# characters, in the statement, in a comment, in a string, in the tail.
EDGE_PIECES = ["0", " 0", "''", " ''", " $$$$", "--\n", "/**/", " -- \n", " /* */", "\x00", " \x00 ", "\x00'", "'\x00'",
               "/*\x00*/", "$\x00$", "1\x00", "é", "\x80", "\x7f", "\xff", " 12", " 0.0", " 00", "'0'", " $$$$$$",
               " IN (0, 0)", " IN ('', '')", " in(0,'')", "x1", "_9", " 1e5", " ; ", "$1", "a$", "\"a\"", "'", "$$"]  # fmt: skip
EDGE_TAILS = ["", ";", " ", "0", " 1", "''", " 'é'", "\x00", " -- 1\n", " /* \x80 */", "; -- é", "\xc3", "\x00;"]


@st.composite
def edge_texts(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from("ab_9Z")) * draw(st.integers(0, 17))
    pieces = draw(st.lists(st.sampled_from(EDGE_PIECES), min_size=1, max_size=4))
    text = (draw(st.sampled_from(["", " ", "/**/", "--\n", "\x00", "/* 1 */ "])) + draw(st.sampled_from(KEYWORDS))
            + " " + name + "".join(pieces) + " " + name[: draw(st.integers(0, 9))] + draw(st.sampled_from(EDGE_TAILS)))  # fmt: skip
    raw = text.encode("utf-8") if draw(st.booleans()) else text.encode("latin-1")
    if draw(st.integers(0, 3)) == 0:  # one odd byte at any position: each lane of the ASCII words, and the tail
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + bytes([draw(st.sampled_from([0, 0x7F, 0x80, 0xC3, 0xFF]))]) + raw[at:]
    return raw


@settings(max_examples=1500, deadline=None)
@given(edge_texts())
@example(b"SELECT 0")
@example(b"SELECT '' , $$$$ -- \n/**/;")
@example(b"SELECT a\x00 1")
@example(b"SELECT 1\x00")
@example(b"SELECT abcdefg\x80 1")
@example(b"SELECT 0 -- \x80")
@example(b"select x IN (0, 0)")
def test_edge_texts_compiled_and_interpreted_give_the_regexes_key(sql):
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    want = _outcome(pure.literal_key_bytes, sql)
    assert _outcome(compiled.literal_key_bytes, sql) == want, sql
    assert _outcome(classify_key._key_typed, sql) == want, sql
    if len(sql) < 200:  # and as str: the scanner over ASCII text's bytes (compiled), or the regexes
        text = sql.decode("utf-8", "surrogateescape")
        assert _outcome(compiled.literal_key, text) == _outcome(pure.literal_key, text), sql


@pytest.mark.parametrize("n", [10, 11, 15, 16, 17, 63, 64, 65, 255, 256, 257, 504, 505, 511, 512, 513, 520])
def test_every_position_of_one_odd_byte(n):
    """A text of n bytes that a replacement at its last byte keys (or its first after the keyword),
    with one non-ASCII byte or NUL put at each position in turn: compiled and regexes agree (an ASCII
    test that missed a lane of its words, or the tail, keys a non-ASCII text)."""
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    for base in (b"SELECT " + b"a" * (n - 9) + b" 1", b"SELECT 1" + b" " * (n - 8), b"SELECT 'y" + b"x" * (n - 10) + b"'"):
        assert len(base) == n and compiled.literal_key_bytes(base) != base
        for at in range(len(base)):
            for odd in (0x80, 0xFF, 0x00):
                sql = base[:at] + bytes([odd]) + base[at + 1:]
                assert _outcome(compiled.literal_key_bytes, sql) == _outcome(pure.literal_key_bytes, sql), (at, odd)


def test_literals_that_are_their_own_replacement():
    """Nothing to replace: the text is its own key, the same object, in both twins; one replacement
    anywhere makes a new key."""
    compiled, pure = _twins("proxy.dbproxy.classify_key")
    for sql in (b"SELECT 0", b"SELECT '' FROM t WHERE a = $$$$ --\n", b"/**/ SELECT 0 /**/;", b"--\nSELECT a, 0, '';",
                b"SELECT x IN (0)", b"SELECT \"a\" + $1 - a$b / 2.5e3"):  # fmt: skip
        for twin in (compiled, pure):
            key = twin.literal_key_bytes(sql)
            assert key == pure.literal_key_bytes(sql), sql
            if b"2.5e3" not in sql:
                assert key is sql, sql
    assert compiled.literal_key_bytes(b"SELECT x IN (0, 0)") == b"SELECT x IN (0)"
    assert compiled.literal_key_bytes(b"SELECT '' FROM t WHERE a = 1") == b"SELECT '' FROM t WHERE a = 0"


@settings(max_examples=800, deadline=None)
@given(st.one_of(INPUTS, edge_texts(), st.sampled_from([b"", b"BEGIN;", b"END;", b"COMMIT", b"SET x = 1", b"\x0bSELECT 1",
                                                           b"(SELECT 1)", b"EXPLAIN SELECT 1", b"\xefSELECT 1"])))  # fmt: skip
def test_the_pure_caches_first_byte_test_skips_only_texts_that_are_their_own_key(sql):
    """The pure cache calls the regexes only for a text whose first byte may start a keyed text
    (classify_cache._MAY_KEY): any other text must be its own key (a set that missed a keyword's
    letter or a whitespace character fails here)."""
    from proxy.dbproxy import classify_cache

    if sql[:1] not in classify_cache._MAY_KEY:
        assert _regex(sql) is sql, sql
    for first in b" \t\n\r\x0b\x0c-/SsIiUuDdVvWwTt":
        assert bytes([first]) in classify_cache._MAY_KEY
