"""The HTTP/1.1 grammar the pure-Python parts of the codec need, as compiled regexes.

Each rule quotes RFC 9110 / RFC 9112. Only the response parser and a few request checks use these:
llhttp (via httptools) already enforces the request grammar in C.
"""

from __future__ import annotations

import re

__all__: list[str] = []  # private: the public modules import names from here directly

# RFC 9110 5.6.2: token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#           / DIGIT / ALPHA
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"

# RFC 9110 5.5: field-value = *field-content; field-vchar = VCHAR / obs-text; SP and HTAB allowed
# inside. CR, LF, NUL and other CTLs are not, so a bare CR or LF inside a line fails this class.
FIELD_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"

# RFC 9112 5: field-line = field-name ":" OWS field-value OWS. No whitespace before the colon
# (5.1: MUST reject with 400), and a line starting with SP/HTAB (obs-fold, 5.2) cannot match
# because field-name must start with a tchar.
FIELD_LINE_RE = re.compile(rb"(" + TOKEN + rb"):(" + FIELD_VALUE + rb")")

# The same over CRLF-terminated lines already validated (the requests' simple path): name and value
# without its OWS, one match per line.
FIELD_LINE_CRLF_RE = re.compile(rb"(" + TOKEN + rb"):[ \t]*([^\r\n]*?)[ \t]*\r\n")

# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
#   reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ). Servers that drop the second SP when the
#   reason is empty are common, so that SP is optional here.
# All field lines of a head at once (CRLF-separated, no final CRLF): one regex call per message
# instead of one per line. FIELD_VALUE excludes CR and LF, so line boundaries are unambiguous.
# Possessive repeats: a token stops at ":", a value at CR, so nothing is ever given back, and the
# engine need not keep the state to backtrack (measured: 8.0k -> 7.5k instructions for 5 lines).
FIELD_BLOCK_RE = re.compile(
    rb"(?:" + TOKEN + rb"+:" + FIELD_VALUE + rb"+)(?:\r\n" + TOKEN + rb"+:" + FIELD_VALUE + rb"+)*+"
)
STATUS_LINE_RE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: (" + FIELD_VALUE + rb"))?")

# RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string (RFC 9110 5.6.4: qdtext / quoted-pair)
# RFC 9112 7.1: chunk-size = 1*HEXDIG; we cap it at 16 digits (2**64 - 1), as llhttp does.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*"
    + TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*"
)

# RFC 9110 7.2: Host = uri-host [ ":" port ]; RFC 3986 3.2.2: uri-host = IP-literal / IPv4address /
# reg-name, reg-name = *( unreserved / pct-encoded / sub-delims ). Empty is allowed (7.2: a target
# URI without authority gets an empty Host).
HOST_RE = re.compile(
    rb"(?:\[[0-9A-Fa-f:.vV\-_~!$&'()*+,;=]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"
)

# RFC 9112 3.2.2: absolute-form = absolute-URI; for http(s) that is scheme "://" authority
# path-abempty [ "?" query ]. The authority must not carry userinfo (RFC 9110 4.2.4).
# The authority runs to the first "/", "?" or "#"; one holding "@" (userinfo) is refused later
# rather than split at the "@" (RFC 9110 4.2.4: userinfo is deprecated and unsafe in http URIs).
ABSOLUTE_FORM_RE = re.compile(rb"([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]*)([^#]*)")

# Content-Length = 1*DIGIT (RFC 9110 8.6). 18 digits always fit in an int64, so the check below
# bounds int() work and rejects "overflowing" values without a big-int compare.
MAX_CL_DIGITS = 18


def field_names_re(names: list[bytes]) -> bytes:
    """A regex for "one of `names`, then a colon", ASCII case-insensitive, as a trie with a
    character class per letter (`[Hh]`). The regex engine skips a branch that starts with a class
    after one test of the next byte, and compares no case-folded literals; `(?i:a|b|...):` tries
    every name in turn with case folding, the most expensive part of the simple paths' matches
    (one test per field line: ~19k of ~41k instructions for a browser's 14-line request)."""
    trie: dict = {}
    for name in names:
        node = trie
        for byte in name.lower() + b":":
            node = node.setdefault(byte, {})

    def pattern(node: dict) -> bytes:
        branches = []
        for byte, child in node.items():
            ch = bytes([byte])
            head = b"[" + ch.upper() + ch + b"]" if ch.isalpha() else re.escape(ch)
            branches.append(head + pattern(child))
        if not branches:
            return b""
        return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"

    return pattern(trie)
