"""The classifier cache's key: one entry for all statements of one shape, whatever their literals.

Applications send the same statement again and again with other values inlined: pgbench numbers
(`... WHERE aid = 4711`), an ORM's strings and IN lists (`WHERE email = 'u1@example.com'`,
`WHERE id IN (1, 2, 3)`), and tags in comments (`/* controller='users',request_id=42 */ SELECT`,
sqlcommenter and marginalia put them before or after the statement). Keyed by the exact text,
each of those would miss the cache and pay a full parse (~30 us). `literal_key` maps them to one
key, and must never map two texts that `classify` decides differently to the same key.

What may vary, and why it cannot change a decision: for one plain DML statement (SELECT, INSERT,
UPDATE, DELETE, VALUES, WITH, TABLE; no second statement), no rule of classify_rules.py reads the
value of a numeric or string constant (only EXPLAIN/COPY/SET/BEGIN options, which these are not;
set_config's is_local counts only as the boolean keyword `true`), and comments are whitespace to
PostgreSQL. The key therefore replaces every numeric literal by 0, every standard string by '', a
dollar-quoted string by $$$$, a comment's text by nothing (`--`, `/**/`: still a comment where it
was, so the token structure is the same), and an IN list of such constants by `IN (0)` (a list of
one or many constants parses alike). A comment holding "tierproxy" is kept as it is: a leading
`/* tierproxy:primary */` hint routes (classify._leading_hint), and one not leading changes
nothing, so keeping it is always right.

The risk is lexing a text differently from PostgreSQL (a quote inside a comment taken for a
string, say). So a text is literal-keyed only if it is ASCII and made, after the DML keyword, of
pieces this module reads exactly as PostgreSQL's scanner does (standard_conforming_strings on, as
pglast parses): plain characters, standard '...' strings not glued to a word (so no E'', B'', X'',
N'' or typed 'x' strings), "identifiers" of letters, digits and underscores, `--` and
non-nested `/* */` comments, $n parameters, $tag$...$tag$ strings, and a `$` only inside a word.
Anything else (E'' strings with backslashes, U&'', nested comments, anything unterminated, a `;`
followed by more than whitespace and comments) is its own key, as before.

Two versions: over str (`literal_key`) and over the raw bytes of a Query message
(`literal_key_bytes`, so a cache hit needs no decoding); on ASCII text they give the same key.

This file is compiled (proxy/_native.py; classify_key.pxd types the scanner) and is also its own
pure-Python twin, like proxy/pgwire/scan.py: interpreted, `literal_key_bytes` is the regexes
below (the cheapest form there); compiled, it is `_key_typed`, one typed scan over the bytes that
gives the regexes' key for every input (tests/unit/test_native_classify_key.py), at a tenth of
their cost (docs/perf.md); `literal_key` likewise (compiled: the scan over ASCII text's bytes).
"""

from __future__ import annotations

import re
from typing import Any, Callable

__all__ = ["literal_key", "literal_key_bytes"]

_SPACE = r"[ \t\n\r\f\v]"
_WORD = r"[A-Za-z0-9_]"
# Bodies of a non-nested block comment: no "/*" inside (PostgreSQL would nest), ends at "*/".
# Bodies of a non-nested block comment: no "/*" inside (PostgreSQL would nest), ends at "*/".
# Unrolled (runs of plain characters, then one "*" or "/"): several times faster than one
# alternation per character.
_BLOCK_BODY = r"[^*/]*+(?:(?:\*(?!/)|/(?!\*))[^*/]*+)*+"
_COMMENT = r"(?:--[^\n\r]*+|/\*" + _BLOCK_BODY + r"\*/)"
# The look-behind after the "$": a "$" inside a word is part of it (a$b), not a quote.
_DOLLAR = r"\$(?<![A-Za-z0-9_$]\$)(?P<tag>(?:[A-Za-z_][A-Za-z0-9_]*+)?+)\$(?s:.*?)\$(?P=tag)\$"
# A text this module can read: DML keyword after whitespace and comments, then pieces (see the
# module docstring) up to the first ";", then only ";", whitespace and comments. Every piece that
# needs more than the numbers replaced (a string, a comment, a dollar quote, the "(" of an IN list)
# sets an (empty) group: with none set, as in pgbench's statements, the numbers are all there is.
_KEYABLE = (
    r"" + _SPACE + r"*+(?:" + _COMMENT + r"()" + _SPACE + r"*+)*+"
    r"(?i:select|insert|update|delete|values|with|table)(?!" + _WORD + r"|\$)(?:[^'\"$/\-;&(]++"
    r"|'(?<![A-Za-z0-9_$]')[^']*+(?:''[^']*+)*+'()"  # a standard string, not E'' and the like
    r'|"[A-Za-z_][A-Za-z0-9_]*+"'  # a quoted identifier a number can never be read in
    r"|" + _COMMENT + r"()|" + _DOLLAR + r"()|\$(?<![A-Za-z0-9_$]\$)[0-9]++|(?<=[A-Za-z_$])\$"
    r"|\((?:(?<=[ \t\n\r\f\v)][Ii][Nn]\()()|(?<=[ \t\n\r\f\v)][Ii][Nn][ \t\n\r\f\v]\()())?+"
    r"|-(?!-)|/(?!\*)|&(?![\"']))*+(?:;|" + _SPACE + r"++|" + _COMMENT + r"())*+"
)
# The pieces to replace, in one scan from the left (strings, comments and dollar quotes hide each
# other). Each branch starts with a literal character, so the engine skips ahead to those; the
# empty group that ends it says which matched: 1 string, 2 line comment, 3 block comment,
# 5 dollar-quoted string (4 is its tag).
_LITERALS = (
    r"'[^']*+(?:''[^']*+)*+'()|--[^\n\r]*+()|/\*" + _BLOCK_BODY + r"\*/()|" + _DOLLAR + r"()"
)
# The same for a text that mentions "tierproxy" (in any case): comments that do are kept (groups
# 2 and 4), the others replaced (3 and 5); 7 is the dollar-quoted string.
_LITERALS_HINTED = (
    r"'[^']*+(?:''[^']*+)*+'()"
    r"|--(?=[^\n\r]*?(?i:tierproxy))[^\n\r]*+()|--[^\n\r]*+()"
    r"|/\*(?=(?:[^*]|\*(?!/))*?(?i:tierproxy))" + _BLOCK_BODY + r"\*/()|/\*" + _BLOCK_BODY + r"\*/()"
    r"|" + _DOLLAR + r"()"
)
# A number not preceded by [\w$.] (part of a name or a number) nor followed by [\w.]. It starts
# with \d, the look-behind after it, so the regex engine can skip to digits instead of trying the
# look-behind at every position.
_NUMBER = r"[0-9](?<![A-Za-z0-9_$.][0-9])[0-9]*+(?:\.[0-9]*+)?+(?:[eE][-+]?[0-9]++)?+(?![A-Za-z0-9_.])"
# An IN list of two or more constants (after the above: 0 or ''), after a space or ")". It starts
# with a character class, so the engine skips ahead to an I.
_IN_LIST = r"[Ii](?<=[ \t\n\r\f\v)][Ii])[Nn]" + _SPACE + r"*+\(" + _SPACE + r"*+(?:0|'')(?:" + _SPACE + \
    r"*+," + _SPACE + r"*+(?:0|''))++" + _SPACE + r"*+\)"


class _Keyer:
    """The patterns and replacements for one string type (str or bytes)."""

    __slots__ = ("keyable", "literals", "hinted", "number", "in_list", "repl", "repl_hinted", "zero", "in_zero",
                 "tierproxy")  # fmt: skip

    def __init__(self, conv: Any) -> None:
        self.keyable = re.compile(conv(_KEYABLE)).fullmatch
        self.literals = re.compile(conv(_LITERALS)).sub
        self.hinted = re.compile(conv(_LITERALS_HINTED)).sub
        self.number = re.compile(conv(_NUMBER)).sub
        self.in_list = re.compile(conv(_IN_LIST)).sub
        # by group number: the replacement, or None to keep the text
        self.repl = (None, conv("''"), conv("--"), conv("/**/"), None, conv("$$$$"))
        self.repl_hinted = (None, conv("''"), None, conv("--"), None, conv("/**/"), None, conv("$$$$"))
        self.zero, self.in_zero = conv("0"), conv("IN (0)")
        self.tierproxy = conv("tierproxy")

    def key(self, sql: Any) -> Any:
        if not sql.isascii():
            return sql
        m = self.keyable(sql)
        if m is None:
            return sql
        if m.lastindex is None:  # numbers only (see _KEYABLE)
            key = self.number(self.zero, sql)
        else:
            if self.tierproxy in sql.lower():
                key = self.hinted(self.replace_hinted, sql)
            else:
                key = self.literals(self.replace, sql)
            key = self.in_list(self.in_zero, self.number(self.zero, key))
        return sql if key == sql else key

    def replace(self, m: re.Match[Any]) -> Any:
        return self.repl[m.lastindex]  # type: ignore[index]

    def replace_hinted(self, m: re.Match[Any]) -> Any:
        r = self.repl_hinted[m.lastindex]  # type: ignore[index]
        return m.group() if r is None else r


_STR = _Keyer(lambda s: s)
_BYTES = _Keyer(lambda s: s.encode("ascii"))


# -- the compiled twin's scanner ----------------------------------------------------------------
#
# `_key_typed` gives `_BYTES.key`'s answer in one pass over the bytes, without the regex engine:
# compiled (classify_key.pxd types it: pointers into the text and into the output, C integers),
# that is a few instructions per byte where the regexes take ~100. It reads the text as _KEYABLE
# does (each piece there is decided by its first character and the one before, so the regex is a
# deterministic scan), writes each piece's replacement (_LITERALS, _LITERALS_HINTED) and replaces
# numbers as it goes (_NUMBER: every replacement begins and ends with the character its piece
# began and ended with, or ends before a newline, so a number's look-behind and look-ahead see
# the same character in the text and in the replaced text), then runs _IN_LIST over what it wrote.
# Interpreted, the regexes are cheaper: the pure twin keeps them, and the scanner runs there only
# in tests (tests/unit/test_dbproxy_classify_keyscan.py holds it to the regexes' answers).
# Characters are compared as numbers: 9-13 and 32 whitespace, 34 ", 36 $, 39 ', 40 (, 41 ),
# 42 *, 43 +, 44 ",", 45 -, 46 ., 47 /, 48-57 digits, 59 ;, 69/101 E/e, 73/105 I/i, 78/110 N/n.


def _space(c: int) -> bool:
    return c == 32 or 9 <= c <= 13


def _word(c: int) -> bool:  # [A-Za-z0-9_]
    return 97 <= (c | 32) <= 122 or 48 <= c <= 57 or c == 95


def _wordish(c: int) -> bool:  # [A-Za-z0-9_$]: what a string, a dollar quote or a parameter may not follow
    return _word(c) or c == 36


def _line_end(p: bytes, i: int, n: int) -> int:
    while i < n and p[i] != 10 and p[i] != 13:
        i += 1
    return i


def _block_end(p: bytes, i: int, n: int) -> int:
    """The end of a block comment whose body starts at `i`, or -1 (unterminated, or nested)."""
    while i < n:
        c = p[i]
        if c == 42:
            if i + 1 < n and p[i + 1] == 47:
                return i + 2
        elif c == 47 and i + 1 < n and p[i + 1] == 42:
            return -1
        i += 1
    return -1


def _string_end(p: bytes, i: int, n: int) -> int:
    """The end of a standard string whose body starts at `i` ('' inside), or -1."""
    while i < n:
        if p[i] == 39:
            if i + 1 < n and p[i + 1] == 39:
                i += 2
                continue
            return i + 1
        i += 1
    return -1


def _dollar_end(p: bytes, i: int, n: int) -> int:
    """The end of the $tag$...$tag$ string at `i` (its `$`, not after a word), or -1."""
    t = i + 1
    if t < n and (97 <= (p[t] | 32) <= 122 or p[t] == 95):
        t += 1
        while t < n and _word(p[t]):
            t += 1
    if t >= n or p[t] != 36:
        return -1
    size = t + 1 - i  # of the delimiter, $tag$
    j = t + 1
    while j + size <= n:
        if p[j] == 36:
            k = 1
            while k < size and p[j + k] == p[i + k]:
                k += 1
            if k == size:
                return j + size
        j += 1
    return -1


def _number_end(p: bytes, i: int, n: int) -> int:
    """The end of the number whose first digit is at `i` (not after [A-Za-z0-9_$.]), or -1."""
    j = i + 1
    while j < n and 48 <= p[j] <= 57:
        j += 1
    if j < n and p[j] == 46:
        j += 1
        while j < n and 48 <= p[j] <= 57:
            j += 1
    if j < n and (p[j] | 32) == 101:
        k = j + 1
        if k < n and (p[k] == 45 or p[k] == 43):
            k += 1
        if k < n and 48 <= p[k] <= 57:
            while k < n and 48 <= p[k] <= 57:
                k += 1
            j = k
    if j < n and (_word(p[j]) or p[j] == 46):
        return -1
    return j


def _copy(p: bytes, i: int, e: int, n: int, q: bytearray, w: int) -> int:
    """p[i:e] written at q[w:] with each number replaced by 0; the new end of q."""
    while i < e:
        c = p[i]
        if 48 <= c <= 57 and not (_wordish(p[i - 1]) or p[i - 1] == 46):  # i > 0: never at the start
            j = _number_end(p, i, n)
            if j >= 0:
                q[w] = 48
                w += 1
                i = j
                continue
        q[w] = c
        w += 1
        i += 1
    return w


def _hinted(p: bytes, i: int, e: int) -> bool:
    """Whether p[i:e] holds "tierproxy", in any case."""
    word = b"tierproxy"
    while i + 9 <= e:
        k = 0
        while k < 9 and (p[i + k] | 32) == word[k]:
            k += 1
        if k == 9:
            return True
        i += 1
    return False


def _comment(p: bytes, i: int, e: int, n: int, q: bytearray, w: int) -> int:
    """The comment p[i:e] written at q[w:]: kept (numbers replaced) if it mentions tierproxy, else
    emptied to -- or /**/."""
    block = p[i] == 47
    if _hinted(p, i + 2, e - 2 if block else e):
        return _copy(p, i, e, n, q, w)
    q[w] = p[i]
    q[w + 1] = p[i + 1]
    if block:
        q[w + 2] = 42
        q[w + 3] = 47
        return w + 4
    return w + 2


def _keyword(p: bytes, i: int, n: int) -> int:
    """The length of the DML keyword at `i` (any case), or 0."""
    if i + 4 > n:
        return 0
    c = p[i] | 32
    if c == 115:
        word = b"select"
    elif c == 105:
        word = b"insert"
    elif c == 117:
        word = b"update"
    elif c == 100:
        word = b"delete"
    elif c == 118:
        word = b"values"
    elif c == 119:
        word = b"with"
    elif c == 116:
        word = b"table"
    else:
        return 0
    size = len(word)
    if i + size > n:
        return 0
    k = 1
    while k < size and (p[i + k] | 32) == word[k]:
        k += 1
    return size if k == size else 0


def _in_list_end(q: bytearray, j: int, w: int) -> int:
    """The end of `SPACE* ( SPACE* c (SPACE* , SPACE* c)+ SPACE* )` from `j` in q[:w], each c a 0
    or '', or -1 (_IN_LIST after its IN)."""
    while j < w and _space(q[j]):
        j += 1
    if j >= w or q[j] != 40:
        return -1
    j += 1
    count = 0
    while True:
        while j < w and _space(q[j]):
            j += 1
        if j < w and q[j] == 48:
            j += 1
        elif j + 1 < w and q[j] == 39 and q[j + 1] == 39:
            j += 2
        else:
            return -1
        count += 1
        k = j
        while k < w and _space(q[k]):
            k += 1
        if k < w and q[k] == 44:
            k += 1
            while k < w and _space(q[k]):
                k += 1
            if k < w and (q[k] == 48 or (k + 1 < w and q[k] == 39 and q[k + 1] == 39)):
                j = k
                continue
        break
    if count < 2:
        return -1
    while j < w and _space(q[j]):
        j += 1
    return j + 1 if j < w and q[j] == 41 else -1


def _in_lists(q: bytearray, w: int) -> int:
    """_IN_LIST over q[:w], in place (a list is at least as long as IN (0)); the new end."""
    r = o = 0
    while r < w:
        c = q[r]
        if (c | 32) == 105 and r > 0 and r + 1 < w and (q[r + 1] | 32) == 110 and (_space(q[r - 1]) or q[r - 1] == 41):
            e = _in_list_end(q, r + 2, w)
            if e >= 0:  # q[r - 1] is never overwritten before it is read: o <= r - 1 after a list
                q[o] = 73  # IN (0)
                q[o + 1] = 78
                q[o + 2] = 32
                q[o + 3] = 40
                q[o + 4] = 48
                q[o + 5] = 41
                o += 6
                r = e
                continue
        q[o] = c
        o += 1
        r += 1
    return o


# By character: 1 if the scanner stops at it in a statement's pieces ("'$-/;&( and the digits, and
# NUL: compiled, the scan runs to the NUL every bytes object ends with instead of testing the
# length at every byte; a NUL inside the text is stepped over as a plain character).
_PIECE = bytes(1 if c == 0 or chr(c) in "\"$'-/;&(0123456789" else 0 for c in range(256))
_ZERO = bytearray(1)
# Compiled, a text up to this long is keyed in a C array on the stack (classify_key.pxd's `small`)
# instead of a bytearray made per key (`_ZERO * n`, a generic multiply: ~0.35k instructions).
_SMALL = 512


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
COMPILED = type(_probe).__name__ != "function"
_COMPILED = COMPILED  # compiled: a C global (classify_key.pxd)


def _put(q: bytearray, w: int, p: bytes, s: int, e: int) -> int:
    """p[s:e] written at q[w:] as it is; the new end of q (compiled: memcpy, classify_key.pxd)."""
    if _COMPILED:
        return _put_c(q, w, p, s, e)  # noqa: F821 (classify_key.pxd)
    while s < e:
        q[w] = p[s]
        w += 1
        s += 1
    return w


def _scan(p: bytes, n: int, q: bytearray) -> int:
    """The key of the ASCII text p[:n] written at q (`_BYTES.key`'s answer, see above): its
    length, or -1 when the text is its own key (refused, or nothing in it replaced).

    Runs of characters that stay as they are (names, spaces, operators, quoted identifiers,
    parameters, and a literal that is its own replacement: 0, '', $$$$, --, /**/) are stepped over
    and not written: q[:w] is the key of p[:s], and p[s:i] is written (`_put`) only when a
    replacement follows or the key is needed whole (an IN list to fold). A text with nothing
    replaced (BEGIN, `SELECT 0`, a `$1` statement) writes nothing. Compiled, p[n] must be 0 (a
    bytes object's buffer always is): the stepping loop stops there without testing the length.
    """
    t = _PIECE
    w = 0
    s = 0  # p[s:i] is not yet written
    marked = False  # a piece that needs more than its numbers replaced: _KEYABLE's groups
    changed = False  # something written that is not the text's own
    i = 0
    # whitespace and comments, then the keyword
    while True:
        while i < n and _space(p[i]):
            i += 1
        if i + 1 < n and p[i] == 45 and p[i + 1] == 45:
            e = _line_end(p, i + 2, n)
            same = e == i + 2
        elif i + 1 < n and p[i] == 47 and p[i + 1] == 42:
            e = _block_end(p, i + 2, n)
            if e < 0:
                return -1
            same = e == i + 4
        else:
            break
        if not same:
            w = _put(q, w, p, s, i)
            w = _comment(p, i, e, n, q, w)
            s = e
            changed = True
        marked = True
        i = e
    e = i + _keyword(p, i, n)
    if e == i or (e < n and _wordish(p[e])):
        return -1
    i = e
    # the statement's pieces, up to a ";"
    while True:
        if _COMPILED:
            while t[p[i]] == 0:  # p[n] == 0 stops it
                i += 1
        else:
            while i < n and t[p[i]] == 0:
                i += 1
        if i >= n:
            break
        c = p[i]
        if c == 0:  # a NUL inside the text: a plain character
            i += 1
            continue
        if c == 59:
            break
        if c == 39:
            if _wordish(p[i - 1]):
                return -1  # E'', B'', X'', N'', U&'' (U& below), a typed 'x'
            e = _string_end(p, i + 1, n)
            if e < 0:
                return -1
            if e != i + 2:  # not '' already
                w = _put(q, w, p, s, i)
                q[w] = 39
                q[w + 1] = 39
                w += 2
                s = e
                changed = True
            marked = True
            i = e
        elif c == 36:
            if _wordish(p[i - 1]):
                if p[i - 1] >= 48 and p[i - 1] <= 57:
                    return -1
                i += 1  # a $ inside a word
                continue
            e = _dollar_end(p, i, n)
            if e >= 0:
                if e != i + 4:  # not $$$$ already
                    w = _put(q, w, p, s, i)
                    q[w] = q[w + 1] = q[w + 2] = q[w + 3] = 36
                    w += 4
                    s = e
                    changed = True
                marked = True
                i = e
                continue
            e = i + 1
            while e < n and 48 <= p[e] <= 57:
                e += 1
            if e == i + 1:
                return -1
            i = e  # a parameter, $1
        elif c == 34:
            e = i + 1
            if e < n and (97 <= (p[e] | 32) <= 122 or p[e] == 95):
                e += 1
                while e < n and _word(p[e]):
                    e += 1
            if e == i + 1 or e >= n or p[e] != 34:
                return -1
            i = e + 1
        elif (c == 45 or c == 47) and i + 1 < n and p[i + 1] == (45 if c == 45 else 42):
            e = _line_end(p, i + 2, n) if c == 45 else _block_end(p, i + 2, n)
            if e < 0:
                return -1
            if e != i + (2 if c == 45 else 4):  # not -- or /**/ already
                w = _put(q, w, p, s, i)
                w = _comment(p, i, e, n, q, w)
                s = e
                changed = True
            marked = True
            i = e
        elif c == 38 and i + 1 < n and (p[i + 1] == 34 or p[i + 1] == 39):
            return -1
        else:
            if c == 40 and (
                (i >= 3 and (p[i - 2] | 32) == 105 and (p[i - 1] | 32) == 110 and (_space(p[i - 3]) or p[i - 3] == 41))
                or (i >= 4 and _space(p[i - 1]) and (p[i - 3] | 32) == 105 and (p[i - 2] | 32) == 110
                    and (_space(p[i - 4]) or p[i - 4] == 41))
            ):  # fmt: skip
                marked = True  # the "(" of an IN list
            elif 48 <= c <= 57 and not (_wordish(p[i - 1]) or p[i - 1] == 46):
                e = _number_end(p, i, n)
                if e >= 0:
                    if e != i + 1 or c != 48:  # not 0 already
                        w = _put(q, w, p, s, i)
                        q[w] = 48
                        w += 1
                        s = e
                        changed = True
                    i = e
                    continue
            i += 1
    # then only ";", whitespace and comments
    while i < n:
        c = p[i]
        if c == 59 or _space(c):
            i += 1
            continue
        if i + 1 < n and c == 45 and p[i + 1] == 45:
            e = _line_end(p, i + 2, n)
            same = e == i + 2
        elif i + 1 < n and c == 47 and p[i + 1] == 42:
            e = _block_end(p, i + 2, n)
            if e < 0:
                return -1
            same = e == i + 4
        else:
            return -1
        if not same:
            w = _put(q, w, p, s, i)
            w = _comment(p, i, e, n, q, w)
            s = e
            changed = True
        marked = True
        i = e
    if not (changed or marked):
        return -1
    w = _put(q, w, p, s, n)
    if marked:
        w = _in_lists(q, w)
    return w


def _key_in(b: bytes, n: int, q: bytearray) -> int:
    """The key of the text b (n bytes) written at q: its length, or -1 when the text is its own
    key (not ASCII, refused, or the key the same bytes). Compiled, q is a C array (`_key_typed`'s,
    or the classifier cache's for its memo: classify_cache.py)."""
    p = b
    if _COMPILED:
        if not _ascii(p, n):  # noqa: F821 (classify_key.pxd: eight bytes at a time)
            return -1
    elif not b.isascii():
        return -1
    w = _scan(p, n, q)
    if w == n:  # the text itself when nothing changed, compared in place: no bytes made for it
        if _COMPILED:
            if _same_bytes(p, q, n):  # noqa: F821 (classify_key.pxd: memcmp)
                return -1
        elif q[:n] == b:
            return -1
    return w


def _key_typed(sql: bytes) -> bytes:
    """`_BYTES.key(sql)` by one scan (`_scan`); anything but bytes goes to the regexes, for their
    answers and errors."""
    if type(sql) is not bytes:
        return _BYTES.key(sql)
    b = sql  # compiled: typed bytes, read without a call
    n = len(b)
    # The key is never longer than the text.
    if _COMPILED and n <= _SMALL:
        w = _key_in(b, n, small)  # noqa: F821 (classify_key.pxd: a C array)
        if w < 0:
            return sql
        return small[:w]  # noqa: F821 (bytes made from the buffer)
    buf = _ZERO * n  # cheaper than bytearray(n)
    q = buf
    w = _key_in(b, n, q)
    if w < 0:
        return sql
    key = q[:w]  # compiled: bytes; interpreted (tests): a bytearray
    return key if _COMPILED else bytes(key)


def _key_str_typed(sql: str) -> str:
    """`_STR.key(sql)` by the scanner: ASCII text through its bytes (the regexes give the same key
    on both); anything else goes to the regexes."""
    if type(sql) is not str or not sql.isascii():
        return _STR.key(sql)
    raw = sql.encode("ascii")
    key = _key_typed(raw)
    return sql if key is raw else key.decode("ascii")


# The entry points are the bound methods themselves: one Python call per key, not two (this runs
# for every statement whose exact text missed the cache).
literal_key: Callable[[str], str] = _key_str_typed if COMPILED else _STR.key
"""The cache key of `sql` (see the module docstring): itself, or its shape."""
literal_key_bytes: Callable[[bytes], bytes] = _key_typed if COMPILED else _BYTES.key
"""`literal_key` over the bytes of ASCII text; non-ASCII text is its own key."""
