"""pgwire auth: RFC 7677's SCRAM vector, verifiers produced by PostgreSQL 15, md5, failure paths."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pgwire.auth import (
    ScramClient,
    ScramServer,
    ScramVerifier,
    make_md5_hash,
    make_scram_verifier,
    md5_password,
    parse_scram_verifier,
    saslprep,
    verify_md5_response,
    verify_scram_password,
)
from proxy.pgwire.errors import PgProtocolError

# RFC 7677 section 3, verbatim.
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT_B64 = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# rolpassword values produced by PostgreSQL 15.18 (password_encryption = 'scram-sha-256'):
#   CREATE ROLE r1 PASSWORD 'pencil'; ... r2 E'I\u00ADX'; r3 E'a\u00A0b'; r4 E'\u0627\u0031'
PG_VERIFIERS = {
    "pencil": "SCRAM-SHA-256$4096:jclDf7Z/jXNEz4B5GmUYjw==$TZOoHb1Smidk8Xum8OOv/ueREvTqN74E8jowLMAxfHQ="
    ":zPzmB+hCGvJkMjo4DMahDCup7+pzUXLDrQhGiwnuHt4=",
    # SOFT HYPHEN is "mapped to nothing": the same verifier as "IX"
    "I\u00adX": "SCRAM-SHA-256$4096:XnpTq6+6vB+Nyt+SMYntaw==$odfiBXxOwi+FzAlvsMaJp8uqPkq5rTxiqdOli4WM27U="
    ":s+ZJd3JirKomIj5P5NPIUTTOrBQUMFPkeSVAKLN199Q=",
    # NO-BREAK SPACE maps to SPACE: the same verifier as "a b"
    "a\u00a0b": "SCRAM-SHA-256$4096:LXm/tvqtCSqlyKNWCijxww==$YW3+/+xYnGn37okiKJf21Rs4B+El9/S2TD7FUt/N8sU="
    ":INBEhMvXVgaTO1ZVhmCblmVSjFyU1QRZMlCZALqaXTo=",
    # RandALCat first, digit last: fails the bidi rule, so PostgreSQL hashes the raw UTF-8 bytes
    "\u0627\u0031": "SCRAM-SHA-256$4096:pkxyOazH4vSDR7EM6KsqPQ==$00Q7uCByd+86V5SzLL0FyE4wbUhpI41vd9exUMTG87o="
    ":3xQ1WR76SOQUsA/JJBXp8PogDeT424EmT4Ov0egLMvc=",
}
PG_EQUIVALENT = {"I\u00adX": "IX", "a\u00a0b": "a b"}
# PostgreSQL 15, password_encryption = 'md5': CREATE ROLE r5 PASSWORD 'pencil'
PG_MD5_R5 = "md5a728b617a4609f40db04d175f8c34dfc"


def _exchange(client: ScramClient, server: ScramServer) -> None:
    server_first = server.handle_client_first(client.client_first())
    client_final = client.handle_server_first(server_first)
    server_final = server.handle_client_final(client_final)
    client.handle_server_final(server_final)


def test_rfc7677_vector_client():
    client = ScramClient("user", "pencil", nonce=RFC_CLIENT_NONCE)
    assert client.client_first() == RFC_CLIENT_FIRST
    assert client.handle_server_first(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.handle_server_final(RFC_SERVER_FINAL)
    assert client.done


def test_rfc7677_vector_server():
    salt = base64.b64decode(RFC_SALT_B64)
    server = ScramServer("pencil", nonce=RFC_SERVER_NONCE, salt=salt)
    assert server.handle_client_first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.user == "user"
    assert server.handle_client_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.done


def test_rfc7677_vector_client_rejects_a_forged_server_signature():
    client = ScramClient("user", "pencil", nonce=RFC_CLIENT_NONCE)
    client.client_first()
    client.handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(PgProtocolError):
        client.handle_server_final(b"v=" + base64.b64encode(bytes(32)))
    assert not client.done


@pytest.mark.parametrize("password", sorted(PG_VERIFIERS))
def test_postgres_verifiers(password):
    stored = PG_VERIFIERS[password]
    assert verify_scram_password(stored, password)
    assert not verify_scram_password(stored, password + "x")
    if password in PG_EQUIVALENT:
        assert verify_scram_password(stored, PG_EQUIVALENT[password])
    client = ScramClient("", password)
    _exchange(client, ScramServer(stored))
    assert client.done
    with pytest.raises(PgProtocolError) as info:
        _exchange(ScramClient("", "wrong"), ScramServer(stored))
    assert info.value.sqlstate == "28P01"


def test_saslprep_policy():
    assert saslprep("pencil") == b"pencil"
    assert saslprep("a\x07b") == b"a\x07b"  # ASCII is used as is, control characters included
    assert saslprep("I\u00adX") == b"IX"
    assert saslprep("a\u00a0b") == b"a b"
    assert saslprep("\u2168") == b"IX"  # ROMAN NUMERAL NINE, NFKC
    assert saslprep("\u0627\u0031") == "\u0627\u0031".encode()  # bidi failure: raw bytes
    assert saslprep("a\u0007\u00e9") == "a\u0007\u00e9".encode()  # prohibited control: raw
    assert saslprep(b"\xff\xfe") == b"\xff\xfe"  # not UTF-8: raw
    assert saslprep("\u00ad") == "\u00ad".encode()  # maps to empty: raw


@settings(max_examples=15, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_client_against_server(password, other):
    stored = make_scram_verifier(password, iterations=16)
    client = ScramClient("someone", password)
    server = ScramServer(stored)
    _exchange(client, server)
    assert client.done and server.done
    if saslprep(other) != saslprep(password):
        with pytest.raises(PgProtocolError) as info:
            _exchange(ScramClient("someone", other), ScramServer(stored))
        assert info.value.sqlstate == "28P01"


def test_plaintext_secret_and_bytes_password():
    _exchange(ScramClient("u", b"p\xffw"), ScramServer(ScramVerifier.from_password(b"p\xffw", b"salt", 32)))
    _exchange(ScramClient("u,=x", "pw"), ScramServer("pw", iterations=32))


def test_make_and_parse_verifier():
    salt = b"0123456789abcdef"
    text = make_scram_verifier("pencil", salt=salt, iterations=4096)
    v = parse_scram_verifier(text)
    assert (v.iterations, v.salt) == (4096, salt)
    assert str(v) == text
    # independent computation of StoredKey / ServerKey (RFC 5802 section 3)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    import hmac as _hmac

    client_key = _hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert v.stored_key == hashlib.sha256(client_key).digest()
    assert v.server_key == _hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert verify_scram_password(text, "pencil")
    random_salted = parse_scram_verifier(make_scram_verifier("pencil"))
    assert len(random_salted.salt) == 16 and random_salted.iterations == 4096


@pytest.mark.parametrize(
    "text",
    [
        "",
        "md5a728b617a4609f40db04d175f8c34dfc",
        "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=",
        "SCRAM-SHA-256$4096:!!$x:y",
    ],
)
def test_parse_verifier_rejects(text):
    with pytest.raises(ValueError):
        parse_scram_verifier(text)


def test_server_refuses_md5_secret():
    with pytest.raises(ValueError):
        ScramServer(PG_MD5_R5)


def test_mock_server_for_unknown_user_always_fails():
    server = ScramServer(None)
    client = ScramClient("ghost", "anything")
    server_first = server.handle_client_first(client.client_first())
    assert b",s=" in server_first
    with pytest.raises(PgProtocolError) as info:
        server.handle_client_final(client.handle_server_first(server_first))
    assert info.value.sqlstate == "28P01"


@pytest.mark.parametrize(
    "client_first, sqlstate",
    [
        (b"p=tls-server-end-point,,n=,r=abc", "08P01"),  # channel binding
        (b"n,a=admin,n=,r=abc", "0A000"),  # authzid
        (b"n,,m=ext,n=,r=abc", "0A000"),  # mandatory extension
        (b"x,,n=,r=abc", "08P01"),
        (b"n,,n=,r=a,bc", "08P01"),
        (b"n,,n=,r=", "08P01"),
        (b"n,,r=abc", "08P01"),
        (b"n,,n=", "08P01"),
        (b"\xff", "08P01"),
        (b"", "08P01"),
    ],
)
def test_server_rejects_bad_client_first(client_first, sqlstate):
    with pytest.raises(PgProtocolError) as info:
        ScramServer("pw", iterations=16).handle_client_first(client_first)
    assert info.value.sqlstate == sqlstate


def _final_variants():
    client = ScramClient("", "pw", nonce="abc")
    server = ScramServer("pw", nonce="xyz", iterations=16)
    final = client.handle_server_first(server.handle_client_first(client.client_first()))
    return server, final


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.replace(b"c=biws", b"c=eSws"),  # "y,," while the client sent "n,,"
        lambda f: f.replace(b"r=abcxyz", b"r=abcxyZ"),
        lambda f: f.split(b",p=")[0],
        lambda f: f[:-8] + b"AAAAAAA=",
        lambda f: f + b"AAAA",
        lambda f: b"garbage",
        lambda f: b"",
    ],
)
def test_server_rejects_bad_client_final(mutate):
    server, final = _final_variants()
    with pytest.raises(PgProtocolError):
        server.handle_client_final(mutate(final))
    assert not server.done


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=other,s=c2FsdA==,i=16",  # nonce not extending ours
        b"r=abc,s=c2FsdA==,i=16",  # nonce not extended at all
        b"r=abcx,s=c2FsdA==,i=0",
        b"r=abcx,s=c2FsdA==,i=-1",
        b"r=abcx,s=!!!,i=16",
        b"r=abcx,s=,i=16",
        b"r=abcx,i=16",
        b"m=x,r=abcx,s=c2FsdA==,i=16",
        b"\xff",
    ],
)
def test_client_rejects_bad_server_first(server_first):
    client = ScramClient("", "pw", nonce="abc")
    client.client_first()
    with pytest.raises(PgProtocolError):
        client.handle_server_first(server_first)


def test_client_reports_server_error_and_ordering():
    client = ScramClient("", "pw", nonce="abc")
    with pytest.raises(PgProtocolError):
        client.handle_server_final(b"v=AAAA")  # before server-first
    client.handle_server_first(b"r=abcx,s=c2FsdA==,i=16")
    with pytest.raises(PgProtocolError) as info:
        client.handle_server_final(b"e=invalid-proof")
    assert info.value.sqlstate == "28P01"
    server = ScramServer("pw")
    with pytest.raises(PgProtocolError):
        server.handle_client_final(b"c=biws,r=x,p=AAAA")  # before client-first


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_scram_garbage_gives_protocol_error_only(first, final):
    server = ScramServer("pw", iterations=2)
    try:
        server.handle_client_first(first)
        server.handle_client_final(final)
    except PgProtocolError:
        pass
    client = ScramClient("", "pw", nonce="abc")
    try:
        client.handle_server_first(b"r=abc" + first)
        client.handle_server_final(final)
    except PgProtocolError:
        pass


# --- md5 ----------------------------------------------------------------------------------------


def test_md5_against_postgres_and_hashlib():
    assert make_md5_hash("r5", "pencil") == PG_MD5_R5
    salt = b"\x01\x02\x03\x04"
    inner = hashlib.md5(b"pencilr5").hexdigest()
    expected = b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()
    assert md5_password("r5", "pencil", salt) == expected
    assert verify_md5_response(PG_MD5_R5, "r5", salt, expected)
    assert verify_md5_response("pencil", "r5", salt, expected)  # plaintext stored password
    assert not verify_md5_response(PG_MD5_R5, "r5", b"\x01\x02\x03\x05", expected)
    assert not verify_md5_response(PG_MD5_R5, "r5", salt, md5_password("r5", "pencil!", salt))
    assert not verify_md5_response(PG_VERIFIERS["pencil"], "r5", salt, expected)
