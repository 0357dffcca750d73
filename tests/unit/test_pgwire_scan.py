"""skip_plain (proxy/pgwire/scan.py): the relay's step over messages it forwards untouched. Runs on
whichever twin is imported (compiled, or pure under TIERPROXY_PURE=1: both passes of dev.sh test)."""

from __future__ import annotations

import pytest

from proxy.pgwire.scan import skip_plain

FLAGGED = bytes(1 if i in b"13ZEGS" else 0 for i in range(256))
T = b"T\x00\x00\x00\x06\x00\x00"  # 7 bytes: a RowDescription of no columns
D = b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x00"  # 11 bytes: a DataRow of one empty value
C = b"C\x00\x00\x00\x0dSELECT 2\x00"  # 14 bytes
Z = b"Z\x00\x00\x00\x05I"  # 6 bytes


def test_it_stops_at_the_first_flagged_message():
    data = T + D + D + C + Z
    assert skip_plain(data, 0, len(data), FLAGGED) == 7 + 11 + 11 + 14
    assert skip_plain(data, 43, len(data), FLAGGED) == 43  # already at ReadyForQuery
    assert skip_plain(data, 0, len(data), bytes(256)) == len(data)  # nothing flagged: to the end


def test_it_stops_at_an_incomplete_message_or_header():
    data = T + D + D
    assert skip_plain(data, 0, len(data) - 1, FLAGGED) == 18  # the last DataRow lacks a byte
    assert skip_plain(data, 0, 7 + 3, FLAGGED) == 7  # only 3 bytes of the next header
    assert skip_plain(b"", 0, 0, FLAGGED) == 0


@pytest.mark.parametrize("length", [b"\x00\x00\x00\x03", b"\xff\xff\xff\xff", b"\x40\x00\x00\x01", b"\x80\x00\x00\x00"])
def test_it_stops_at_an_invalid_length_and_leaves_the_error_to_its_caller(length):
    data = D + b"D" + length + b"\x00" * 8
    assert skip_plain(data, 0, len(data), FLAGGED) == 11


def test_a_length_of_exactly_one_gibibyte_is_valid_but_incomplete():
    data = D + b"D\x40\x00\x00\x00" + b"\x00" * 8
    assert skip_plain(data, 0, len(data), FLAGGED) == 11


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        skip_plain(D, 0, len(D) + 1, FLAGGED)
    with pytest.raises(ValueError):
        skip_plain(D, -1, len(D), FLAGGED)
    with pytest.raises(ValueError):
        skip_plain(D, 0, len(D), FLAGGED[:255])
    with pytest.raises(TypeError):
        skip_plain(None, 0, 0, FLAGGED)


def test_whole_packet_recognises_the_two_unframed_packets():
    from proxy.pgwire import encode
    from proxy.pgwire.scan import whole_packet

    p = encode.parse("", "SELECT $1")
    rest = encode.bind("", "", [b"1"]) + encode.execute() + encode.sync()
    assert whole_packet(p + rest) == len(p)
    assert whole_packet(p + encode.bind("", "", [b"1"]) + encode.describe("P", "") + encode.execute() + encode.sync()) == len(p)
    assert whole_packet(encode.query("SELECT 1")) == 1
    # Near misses: a named portal or statement, a Describe of the statement, no Sync, a second
    # message, a NUL inside the Query, anything cut short (under 5 bytes included).
    assert whole_packet(p + encode.bind("x", "", [b"1"]) + encode.execute("x") + encode.sync()) == 0
    assert whole_packet(p + encode.bind("", "s", [b"1"]) + encode.execute() + encode.sync()) == 0
    assert whole_packet(p + encode.bind("", "", [b"1"]) + encode.describe("S", "") + encode.execute() + encode.sync()) == 0
    assert whole_packet(p + rest[:-5]) == 0
    assert whole_packet(p + rest + encode.sync()) == 0
    assert whole_packet(encode.query("SELECT 1") + encode.query("SELECT 2")) == 0
    assert whole_packet(b"Q\0\0\0\x0eSELECT\0 1\0") == 0  # a NUL inside: not one statement string
    assert whole_packet(b"Q\0\0\0\x0eSELECT 1 \0") == 1
    for k in range(len(p + rest)):
        assert whole_packet((p + rest)[:k]) == 0
