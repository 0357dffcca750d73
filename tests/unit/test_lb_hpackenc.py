"""lb/hpackenc.py: what it writes is read back by the `hpack` library's decoder (the reference
here), block after block on one connection, and it never touches the decoder's dynamic table."""

from __future__ import annotations

from hpack import Decoder
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.lb.hpackenc import CACHE_FIELDS, StaticEncoder, encode_integer

RESPONSE = [(b":status", b"200"), (b"server", b"nginx"), (b"content-type", b"text/plain"),
            (b"content-length", b"3"), (b"x-custom-thing", b"a value with spaces"), (b"cache-control", b"")]  # fmt: skip


def test_blocks_decode_to_the_same_fields_and_leave_the_dynamic_table_empty():
    enc, dec = StaticEncoder(), Decoder()
    for i in range(5):
        fields = [*RESPONSE, (b"x-request", b"%d" % i)]
        block = enc.encode(fields)
        assert dec.decode(block, raw=True) == fields
        assert not dec.header_table.dynamic_entries and dec.header_table_size == 0
        assert block.startswith(b"\x20") == (i == 0)  # the size update only in the first block


def test_a_whole_static_field_is_one_byte_and_a_static_name_is_reused():
    enc = StaticEncoder()
    enc.encode([])  # past the first block's size update
    assert enc.encode([(b":status", b"200")]) == b"\x88"  # static index 8 (RFC 7541 Appendix A)
    assert enc.encode([(b":status", b"404")]) == b"\x8d"  # index 13
    assert enc.encode([(b":status", b"418")]) == b"\x08\x03418"  # name index 8, literal (Huffman: 17 bits)
    # RFC 7541 C.4.1's field, but without indexing (0000 + name index 1) where the RFC indexes it
    block = enc.encode([(b":authority", b"www.example.com")])
    assert block == b"\x01\x8c" + bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")
    block = enc.encode([(b"x-new", b"v")])
    assert block[0] == 0x00  # literal without indexing, new name


def test_a_changed_table_size_is_announced_again():
    enc, dec = StaticEncoder(), Decoder()
    dec.decode(enc.encode(RESPONSE), raw=True)
    dec.max_allowed_table_size = 0  # our SETTINGS_HEADER_TABLE_SIZE=0 as the client set it
    enc.header_table_size = 0
    block = enc.encode(RESPONSE)
    assert block.startswith(b"\x20")
    assert dec.decode(block, raw=True) == RESPONSE


def test_integers_match_rfc_7541_examples():
    assert encode_integer(10, 5) == b"\x0a"  # C.1.1
    assert encode_integer(1337, 5) == b"\x1f\x9a\x0a"  # C.1.2
    assert encode_integer(42, 8) == b"\x2a"  # C.1.3
    assert encode_integer(127, 7, 0x80) == b"\xff\x00"


def test_the_cache_is_bounded():
    enc, dec = StaticEncoder(), Decoder()
    for i in range(CACHE_FIELDS * 2 + 5):
        fields = [(b"content-length", b"%d" % i)]
        assert dec.decode(enc.encode(fields), raw=True) == fields
    assert len(enc._cache) <= CACHE_FIELDS


NAME = st.binary(min_size=1, max_size=20).map(lambda b: bytes(c % 26 + 97 for c in b))
VALUE = st.binary(max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(NAME | st.sampled_from([b":status", b"content-type", b"date"]), VALUE),
                         max_size=12), min_size=1, max_size=6))  # fmt: skip
def test_generated_header_lists_round_trip(blocks):
    enc, dec = StaticEncoder(), Decoder()
    for fields in blocks:
        assert dec.decode(enc.encode(fields), raw=True) == fields
