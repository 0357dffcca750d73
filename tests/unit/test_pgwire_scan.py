"""whole_packet (proxy/pgwire/scan.py): the client packets the dbproxy runs without framing them.
Runs on whichever twin is imported (compiled, or pure under TIERPROXY_PURE=1: both passes of dev.sh test)."""

from __future__ import annotations


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
