"""Surrogate keys in the cdn (proxy/cdn/surrogate.py, Store.purge_tag): parsing Surrogate-Key
(space-separated) and Cache-Tag (comma-separated), and a group purge removing exactly the stored
objects that carry the key, whatever puts, replacements and evictions came before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.cdn.store import Entry, Store
from proxy.cdn.surrogate import surrogate_keys

names = st.lists(st.text(alphabet="abcdefghij0123456789-_.", min_size=1, max_size=8), max_size=6)


def test_examples():
    hs = [(b"surrogate-key", b"  product-42 all\tcss "), (b"cache-tag", b"a,b , ,c"), (b"x-other", b"zz")]
    assert surrogate_keys(hs) == {b"product-42", b"all", b"css", b"a", b"b", b"c"}
    assert surrogate_keys([]) == frozenset()


@given(names, names, st.sampled_from([" ", "  ", "\t", " \t "]))
def test_every_listed_name_and_nothing_else(sk, ct, sep):
    hs = [(b"surrogate-key", sep.join(sk).encode()), (b"cache-tag", ", ".join(ct).encode())]
    assert surrogate_keys(hs) == {n.encode() for n in sk + ct}


ops = st.lists(st.tuples(st.integers(0, 9), st.lists(st.sampled_from(["red", "blue", "green"]), max_size=3),
                         st.integers(0, 300)), max_size=40)


@given(ops, st.sampled_from(["red", "blue", "green"]), st.sampled_from(["lru", "lfu", "fifo"]), st.booleans())
def test_purge_tag_hits_exactly_the_tagged_objects(puts, tag, policy, soft):
    s = Store(2000, policy)  # small: puts evict others
    expected_tags: dict = {}
    for i, tags, size in puts:
        key = (b"/o/%d" % i, ())
        e = Entry(200, [(b"surrogate-key", " ".join(tags).encode())], b"x" * size, 0, 0, 60)
        evicted = s.put(key, e)
        for k in evicted:
            expected_tags.pop(k, None)
        if key in s:
            expected_tags[key] = set(tags)
    tagged = {k for k, t in expected_tags.items() if tag in t}
    assert s.purge_tag(tag.encode(), soft=soft) == len(tagged)
    for k, t in expected_tags.items():
        if soft:
            assert k in s and s.peek(k).stale == (k in tagged)
        else:
            assert (k in s) == (k not in tagged)
    if not soft:
        assert s.purge_tag(tag.encode()) == 0
