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
