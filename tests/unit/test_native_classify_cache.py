"""The classifier's cache (proxy/dbproxy/classify_cache.py), compiled against its pure-Python
twin: the same `get` / `get_bytes` calls on caches of the same size must give the same decisions
(those `classify` gives), the same errors (anything but the text's type: bytes to `get`, str or a
bytearray to `get_bytes`, None), and leave the same hit and miss counts and size, through
evictions, texts too long to keep, invalid UTF-8 and statements that share a key. Skipped where
the module is not compiled (the pure pass)."""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify import classify
from tests.unit.test_native_differential import _twins

_SHAPES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
    "UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = {n};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({n}, 1, {n}, -{n}, CURRENT_TIMESTAMP);",
    "/* app:orders */ SELECT * FROM orders WHERE id IN ({n}, {n}, 3) AND state = 'open{n}'",
    "/* tierproxy:primary */ SELECT {n}",
    "SELECT nextval('s{n}') -- é",
    "BEGIN;",
    "END;",
    "SET search_path = s{n}",
    "select $1::int",
    "SELECT 1; INSERT INTO t VALUES ({n})",
]

_TEXTS = st.one_of(
    st.builds(lambda shape, n: shape.format(n=n), st.sampled_from(_SHAPES), st.integers(0, 10**6)),
    st.text(max_size=40),
    st.just("SELECT 1" + ", 1" * 5500),  # longer than MAX_CACHED_SQL_LENGTH: classified, not kept
)
_RAW = st.one_of(
    _TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=30),  # invalid UTF-8 too: decoded with replacement on a miss
    st.sampled_from([b"", b"\xff\xfe SELECT 1", b"SELECT '\xc3'"]),
)
_CALLS = st.one_of(
    st.tuples(st.just("get_bytes"), _RAW),
    st.tuples(st.just("get"), _TEXTS),
    st.tuples(st.sampled_from(["get", "get_bytes"]),
              st.sampled_from([None, 1, b"SELECT 1", "SELECT 1", bytearray(b"SELECT 1"), ("SELECT 1",)])),
)


_classify = lru_cache(maxsize=None)(classify)  # what the cache must give: classify's own decision


def _outcome(fn, arg):
    try:
        return ("ok", fn(arg))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.lists(_CALLS, max_size=25))
def test_cache_twins_agree(maxsize, calls):
    compiled, pure = _twins("proxy.dbproxy.classify_cache")
    caches = [compiled.ClassifierCache(maxsize), pure.ClassifierCache(maxsize)]
    for method, arg in calls:
        got = [_outcome(getattr(c, method), arg) for c in caches]
        assert got[0] == got[1], (method, arg)
        if got[0][0] == "ok" and isinstance(arg, (str, bytes)):
            text = arg if isinstance(arg, str) else arg.decode("utf-8", "replace")
            assert got[0][1] == _classify(text), (method, arg)
        states = [(c.hits, c.misses, len(c)) for c in caches]
        assert states[0] == states[1], (method, arg)


@pytest.mark.parametrize("maxsize", [0, -1, "3", None])
def test_cache_size_errors_agree(maxsize):
    compiled, pure = _twins("proxy.dbproxy.classify_cache")
    assert _outcome(compiled.ClassifierCache, maxsize)[1:] == _outcome(pure.ClassifierCache, maxsize)[1:]
    assert _outcome(compiled.ClassifierCache, maxsize)[0] == "raised"


def test_compiled_cache_is_an_extension_type_the_session_calls_in_c():
    compiled, pure = _twins("proxy.dbproxy.classify_cache")
    assert compiled.COMPILED and not pure.COMPILED
    cache = compiled.ClassifierCache(2)
    assert not hasattr(cache, "__dict__")  # an extension type's C fields, not an instance dict
    # A pgbench statement whose literal changes: a hit by its key, counted as such.
    cache.get_bytes(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
    assert cache.get_bytes(b"SELECT abalance FROM pgbench_accounts WHERE aid = 2;").detail == "select"
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    cache.hits = 7  # the counters are ints, readable and settable from Python
    assert cache.hits == 7


# A statement's key sent as a statement of its own, after the statement (and the other way): a key
# is not always its own key (`SELECT 1e+5.`, which PostgreSQL refuses, keys to `SELECT 1e+0`, which
# keys to `SELECT 0`), so a cache that looked a text up by its exact bytes first gave the key's
# text the refused statement's decision (seen failing so at b50e75a). Texts of pgbench's and an ORM's shapes, the keys among them, and near the
# scanner's stack buffer (512 bytes: a longer text's key is made in a bytearray).
def _pair(shape: str, n: int, pad: int) -> list[bytes]:
    text = shape.format(n=n).replace("WHERE", "WHERE" + " " * pad, 1).encode()
    from proxy.dbproxy.classify_key import _BYTES

    return [text, _BYTES.key(text)]


_PAIRS = st.builds(_pair, st.sampled_from([*_SHAPES, "SELECT {n}e+5. FROM t WHERE x = 1e+{n}."]), st.integers(0, 10**6),
                   st.integers(0, 8) | st.integers(440, 520))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.lists(_PAIRS.flatmap(lambda p: st.permutations(p)), max_size=12))
def test_cache_twins_agree_on_texts_and_their_keys(maxsize, pairs):
    compiled, pure = _twins("proxy.dbproxy.classify_cache")
    caches = [compiled.ClassifierCache(maxsize), pure.ClassifierCache(maxsize)]
    for pair in pairs:
        for raw in pair:
            got = [_outcome(c.get_bytes, raw) for c in caches]
            assert got[0] == got[1], raw
            assert got[0][1] == _classify(raw.decode("utf-8", "replace")), raw
            text = raw.decode()
            got = [_outcome(c.get, text) for c in caches]
            assert got[0] == got[1] and got[0][1] == _classify(text), text
            states = [(c.hits, c.misses, len(c)) for c in caches]
            assert states[0] == states[1], raw


# Compiled, `get_bytes` answers from a memo (64 slots, the last key found in each) before the dict:
# a key evicted from the dict must leave the memo too, or the next text of its shape is counted a
# hit where the pure twin counts a miss (and a decision outlives its entry). Texts that are their own
# key and texts keyed to the same bytes share one memo entry; many shapes share slots.
def _run_both(maxsize: int, texts: list[bytes]) -> None:
    compiled, pure = _twins("proxy.dbproxy.classify_cache")
    caches = [compiled.ClassifierCache(maxsize), pure.ClassifierCache(maxsize)]
    for i, raw in enumerate(texts):
        got = [_outcome(c.get_bytes, raw) for c in caches]
        assert got[0] == got[1] and got[0][1] == _classify(raw.decode("utf-8", "replace")), (i, raw)
        states = [(c.hits, c.misses, len(c)) for c in caches]
        assert states[0] == states[1], (i, raw, states)


def test_an_evicted_key_leaves_the_memo():
    a = b"SELECT abalance FROM pgbench_accounts WHERE aid = %d;"
    _run_both(1, [a % 1, a % 2, a % 3, b"BEGIN;", a % 4, a % 5, b"END;", b"BEGIN;", b"BEGIN;", a % 6])
    _run_both(2, [a % 1, a % 2, b"BEGIN;", b"BEGIN;", b"END;", a % 3, b"BEGIN;", b"END;", b"SELECT 0", b"SELECT 7",
                  b"SELECT 0", b"UPDATE t SET a = 1", b"SELECT 9"])  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 99), st.sampled_from([0, 1, 470])),
                                    min_size=1, max_size=150))  # fmt: skip
def test_the_memo_with_many_shapes(maxsize, draws):
    """Shapes of many lengths (so many share a memo slot), each sent with varying literals, some
    their own key (`... = 0`), some padded to the memo's 512-byte limit and past it."""
    texts = []
    for shape, n, pad in draws:
        where = " " * pad + f"= {n}"
        texts.append(f"SELECT c{shape}{'x' * (shape % 13)} FROM t WHERE a {where}".encode())
    _run_both(maxsize, texts)
