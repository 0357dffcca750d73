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


# The entry points are the bound methods themselves: one Python call per key, not two (this runs
# for every statement whose exact text missed the cache).
literal_key: Callable[[str], str] = _STR.key
"""The cache key of `sql` (see the module docstring): itself, or its shape."""
literal_key_bytes: Callable[[bytes], bytes] = _BYTES.key
"""`literal_key` over the bytes of ASCII text; non-ASCII text is its own key."""
