"""The one walker over a statement's leading comments (classify.leading_comments), which both the
routing hint (classify) and the query cache's TTL hint (qcache_policy.cache_hint) read."""

from __future__ import annotations

import pytest

from proxy.dbproxy.classify import Reason, Target, classify, leading_comments
from proxy.dbproxy.qcache_policy import cache_hint

CASES = [
    ("SELECT 1", []),
    ("", []),
    ("  \t\n SELECT 1 /* not leading */", []),
    ("/* a */SELECT 1", [" a "]),
    ("-- one\n  /* two */ -- three\r\nSELECT 1", [" one", " two ", " three"]),
    # PostgreSQL ends a `--` comment at \r as at \n (its scanner: --[^\n\r]*).
    ("-- x\r/* y */ SELECT 1", [" x", " y "]),
    ("--a\rtierproxy:primary\nSELECT 1", ["a"]),
    ("/* a /* nested */ b */ /**/ SELECT", [" a /* nested */ b ", ""]),
    ("\x0b\x0c/* x */", [" x "]),
    ("-- no newline at all", [" no newline at all"]),
    ("/* done */ /* open /* inner */ ", [" done "]),  # unterminated: the walk ends
    ("/* a */ x /* b */", [" a "]),
]


@pytest.mark.parametrize(("sql", "bodies"), CASES)
def test_leading_comments(sql, bodies):
    assert list(leading_comments(sql)) == bodies


def test_both_hints_are_found_wherever_the_walker_finds_a_comment():
    sql = "-- app=shop\n/* x /* y */ z */ /* tierproxy:cache ttl=30 */ /* tierproxy:primary */ SELECT 1"
    assert cache_hint(sql) == 30
    assert classify(sql).reason is Reason.HINT and classify(sql).target is Target.PRIMARY
    late = "SELECT 1 /* tierproxy:cache ttl=30 */ /* tierproxy:primary */"
    assert cache_hint(late) is None and classify(late).reason is not Reason.HINT
    unterminated = "/* tierproxy:cache ttl=5 */ /* open SELECT 1"
    assert cache_hint(unterminated) == 5
    assert cache_hint("/* open /* tierproxy:cache ttl=5 */ SELECT 1") is None


def test_a_carriage_return_ends_a_line_comment_as_postgresql_scans_it():
    # After "--a\r" the text is SQL (a syntax error here), not a hint in the comment; a hint on
    # a line of its own ending in \r\n (Windows line ends) is still a hint.
    assert classify("--a\rtierproxy:primary\nSELECT 1").reason is not Reason.HINT
    assert classify("--\rtierproxy:primary\nSELECT 1").reason is not Reason.HINT
    replica = classify("-- tierproxy:replica\r\nSELECT 1")
    assert replica.reason is Reason.HINT and replica.target is Target.REPLICA
    assert cache_hint("-- x\rtierproxy:cache ttl=5\nSELECT 1") is None
    assert cache_hint("-- tierproxy:cache ttl=5\r\nSELECT 1") == 5
