"""The proxy's client authentication state machine against the real SCRAM/md5 client code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.pgfront.clientauth import ClientAuth, Credentials, is_loopback
from proxy.pgfront.config import AuthConfig
from proxy.pgwire import encode
from proxy.pgwire.auth import (
    ScramClient,
    make_md5_hash,
    make_scram_verifier,
    md5_password,
)
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import (
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    decode_backend,
)


def _creds(method: str = "scram-sha-256", **users: dict[str, str]) -> Credentials:
    return Credentials(AuthConfig.model_validate({"method": method, "users": users}))


def _decode(data: bytes) -> list[object]:
    return [decode_backend(m) for m in BackendFramer().feed(data)]


def _body(message: bytes) -> bytes:
    return message[5:]  # a 'p' message minus type and length


def _scram_login(auth: ClientAuth, user: str, password: str) -> list[object]:
    first = _decode(auth.start())
    assert isinstance(first[0], AuthenticationSASL) and "SCRAM-SHA-256" in first[0].mechanisms
    client = ScramClient(user, password)
    cont = _decode(auth.handle(_body(encode.sasl_initial_response("SCRAM-SHA-256", client.client_first()))))
    assert isinstance(cont[0], AuthenticationSASLContinue)
    final = _decode(auth.handle(_body(encode.sasl_response(client.handle_server_first(cont[0].data)))))
    assert isinstance(final[0], AuthenticationSASLFinal)
    client.handle_server_final(final[0].data)  # the proxy proved it knows the verifier
    return final


@pytest.mark.parametrize(
    "user_cfg",
    [{"password": "s3cret"}, {"secret": make_scram_verifier("s3cret")}],
    ids=["plaintext", "verifier"],
)
def test_scram_with_the_right_password_logs_in(user_cfg):
    auth = ClientAuth(_creds(app=user_cfg), "app", "127.0.0.1")
    final = _scram_login(auth, "app", "s3cret")
    assert isinstance(final[1], AuthenticationOk) and auth.done


@pytest.mark.parametrize("user,password", [("app", "wrong"), ("nobody", "s3cret")])
def test_scram_wrong_password_or_unknown_user_is_28P01_after_a_full_exchange(user, password):
    auth = ClientAuth(_creds(app={"password": "s3cret"}), user, "127.0.0.1")
    with pytest.raises(PgProtocolError) as exc:
        _scram_login(auth, user, password)
    assert exc.value.sqlstate == "28P01"
    assert f'"{user}"' in exc.value.message
    assert not auth.done


@pytest.mark.parametrize(
    "user_cfg",
    [{"password": "pw"}, {"secret": make_md5_hash("app", "pw")}],
    ids=["plaintext", "md5-hash"],
)
def test_md5_login_and_refusal(user_cfg):
    creds = _creds("md5", app=user_cfg)
    auth = ClientAuth(creds, "app", "127.0.0.1")
    (challenge,) = _decode(auth.start())
    assert isinstance(challenge, AuthenticationMD5Password)
    ok = _decode(auth.handle(_body(encode.password_message(md5_password("app", "pw", challenge.salt)))))
    assert isinstance(ok[0], AuthenticationOk) and auth.done
    bad = ClientAuth(creds, "app", "127.0.0.1")
    (challenge,) = _decode(bad.start())
    with pytest.raises(PgProtocolError) as exc:
        bad.handle(_body(encode.password_message(md5_password("app", "nope", challenge.salt))))
    assert exc.value.sqlstate == "28P01"


def test_md5_method_with_a_scram_verifier_runs_scram_like_postgresql():
    auth = ClientAuth(_creds("md5", app={"secret": make_scram_verifier("pw")}), "app", "127.0.0.1")
    assert isinstance(_scram_login(auth, "app", "pw")[1], AuthenticationOk)


@pytest.mark.parametrize("peer,ok", [("127.0.0.1", True), ("::1", True), ("10.1.2.3", False), (None, False)])
def test_trust_is_for_loopback_only_by_default(peer, ok):
    auth = ClientAuth(_creds("trust"), "anyone", peer)
    if ok:
        assert isinstance(_decode(auth.start())[0], AuthenticationOk) and auth.done
    else:
        with pytest.raises(PgProtocolError) as exc:
            auth.start()
        assert exc.value.sqlstate == "28000"


def test_trust_anywhere_when_configured():
    creds = Credentials(AuthConfig.model_validate({"method": "trust", "trust_loopback_only": False}))
    auth = ClientAuth(creds, "anyone", "10.1.2.3")
    assert isinstance(_decode(auth.start())[0], AuthenticationOk)


def test_wrong_mechanism_and_messages_out_of_order_are_protocol_errors():
    auth = ClientAuth(_creds(app={"password": "pw"}), "app", "127.0.0.1")
    auth.start()
    with pytest.raises(PgProtocolError) as exc:
        auth.handle(_body(encode.sasl_initial_response("SCRAM-SHA-1", b"n,,n=,r=abc")))
    assert exc.value.sqlstate == "08P01"


@given(st.binary(max_size=200))
def test_garbage_answers_raise_protocol_errors_only(data):
    for method in ("scram-sha-256", "md5"):
        auth = ClientAuth(_creds(method, app={"password": "pw"}), "app", "127.0.0.1")
        auth.start()
        try:
            auth.handle(data)
            auth.handle(data)
        except PgProtocolError as exc:
            assert exc.sqlstate in ("08P01", "28P01", "0A000")
        assert not auth.done


def test_is_loopback():
    assert is_loopback("127.0.0.5") and is_loopback("::1")
    assert not is_loopback("192.168.0.1") and not is_loopback("localhost") and not is_loopback("")
