"""pgwire codecs: hand-written wire vectors, hypothesis round trips for every message, the Reader."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.pgwire import encode as enc
from proxy.pgwire import messages as m
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import BackendFramer, FrontendFramer, Message
from proxy.pgwire.reader import Reader

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Vectors written by hand from protocol-message-formats.html, not from the encoders. ---------
VECTORS = [
    (enc.query("select 1"), b"Q\x00\x00\x00\x0dselect 1\x00"),
    (enc.sync(), b"S\x00\x00\x00\x04"),
    (enc.terminate(), b"X\x00\x00\x00\x04"),
    (enc.ready_for_query("I"), b"Z\x00\x00\x00\x05I"),
    (enc.authentication_ok(), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    (enc.authentication_md5_password(b"\x01\x02\x03\x04"), b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04"),
    (enc.authentication_sasl(), b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"),
    # 80877103 = 0x04D2162F, 80877102 = 0x04D2162E, 196608 = 0x00030000
    (enc.ssl_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    (enc.cancel_request(7, 0xDEADBEEF), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x07\xde\xad\xbe\xef"),
    (enc.startup_message({"user": "u"}), b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00u\x00\x00"),
    (enc.backend_key_data(1, 2), b"K\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x02"),
    (enc.parameter_status("a", "b"), b"S\x00\x00\x00\x08a\x00b\x00"),
    (enc.command_complete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
    (enc.data_row([b"ab", None]), b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff"),
    (enc.bind("", "s", [b"1"]), b"B\x00\x00\x00\x12\x00s\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"),
    (enc.execute("", 0), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
    (enc.describe("S", "s"), b"D\x00\x00\x00\x07Ss\x00"),
    (
        enc.error_response("ERROR", "42601", "oops"),
        b"E\x00\x00\x00\x20SERROR\x00VERROR\x00C42601\x00Moops\x00\x00",
    ),
    (enc.copy_in_response(0, [0, 0]), b"G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00"),
]


@pytest.mark.parametrize("built, expected", VECTORS)
def test_wire_vectors(built, expected):
    assert built == expected


def _front(raw: bytes):
    framer = FrontendFramer(startup=raw[:1] == b"\x00")
    (msg,) = framer.feed(raw)
    assert bytes(msg.raw) == raw
    return m.decode_frontend(msg)


def _back(raw: bytes):
    (msg,) = BackendFramer().feed(raw)
    assert bytes(msg.raw) == raw
    return m.decode_backend(msg)


# --- Strategies ---------------------------------------------------------------------------------
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
blob = st.binary(max_size=40)
value = st.none() | blob
fmts = st.lists(st.integers(0, 1), max_size=4).map(tuple)
kind = st.sampled_from("SP")


@st.composite
def bind_args(draw):
    params = tuple(draw(st.lists(value, max_size=5)))
    n = draw(st.sampled_from([0, 1, len(params)]))
    pf = tuple(draw(st.integers(0, 1)) for _ in range(n)) if n != 1 or params else ()
    return draw(text), draw(text), pf, params, draw(fmts)


field_desc = st.builds(m.FieldDescription, text, u32, i16, u32, i16, i32, i16)
error_fields = st.tuples(text, st.text("0123456789ABCDEFPXZ", min_size=5, max_size=5), text, st.none() | text, st.none() | text)


def _fields(sev, code, msg, detail, hint):
    f = {"S": sev, "V": sev, "C": code, "M": msg}
    if detail is not None:
        f["D"] = detail
    if hint is not None:
        f["H"] = hint
    return f


# (encoded message, expected decoded) pairs, frontend then backend
FRONTEND = st.one_of(
    st.dictionaries(text.filter(bool), text, max_size=4).map(lambda p: (enc.startup_message(p), m.StartupMessage(196608, p))),
    st.just((enc.ssl_request(), m.SSLRequest())),
    st.just((enc.gssenc_request(), m.GSSENCRequest())),
    st.tuples(i32, u32).map(lambda a: (enc.cancel_request(*a), m.CancelRequest(*a))),
    text.map(lambda s: (enc.query(s), m.Query(s))),
    st.tuples(text, text, st.lists(u32, max_size=4).map(tuple)).map(lambda a: (enc.parse(*a), m.Parse(*a))),
    bind_args().map(lambda a: (enc.bind(a[0], a[1], a[3], param_formats=a[2], result_formats=a[4]), m.Bind(*a))),
    st.tuples(text, i32).map(lambda a: (enc.execute(*a), m.Execute(*a))),
    st.tuples(kind, text).map(lambda a: (enc.describe(*a), m.Describe(*a))),
    st.tuples(kind, text).map(lambda a: (enc.close(*a), m.Close(*a))),
    st.just((enc.sync(), m.Sync())),
    st.just((enc.flush(), m.Flush())),
    st.just((enc.terminate(), m.Terminate())),
    blob.map(lambda b: (enc.copy_data(b), m.CopyData(b))),
    st.just((enc.copy_done(), m.CopyDone())),
    text.map(lambda s: (enc.copy_fail(s), m.CopyFail(s))),
    st.tuples(u32, st.lists(value, max_size=3).map(tuple), i16).map(
        lambda a: (enc.function_call(a[0], a[1], result_format=a[2]), m.FunctionCall(a[0], (), a[1], a[2]))
    ),
    blob.map(lambda b: (enc.sasl_response(b), m.AuthResponse(b))),
)

BACKEND = st.one_of(
    st.sampled_from("SGN").map(lambda a: (enc.encryption_response(a), m.EncryptionResponse(a))),
    st.just((enc.authentication_ok(), m.AuthenticationOk())),
    st.just((enc.authentication_cleartext_password(), m.AuthenticationCleartextPassword())),
    st.binary(min_size=4, max_size=4).map(lambda s: (enc.authentication_md5_password(s), m.AuthenticationMD5Password(s))),
    st.lists(text.filter(bool), max_size=3).map(lambda x: (enc.authentication_sasl(x), m.AuthenticationSASL(tuple(x)))),
    blob.map(lambda b: (enc.authentication_sasl_continue(b), m.AuthenticationSASLContinue(b))),
    blob.map(lambda b: (enc.authentication_sasl_final(b), m.AuthenticationSASLFinal(b))),
    st.tuples(text, text).map(lambda a: (enc.parameter_status(*a), m.ParameterStatus(*a))),
    st.tuples(i32, u32).map(lambda a: (enc.backend_key_data(*a), m.BackendKeyData(*a))),
    st.sampled_from("ITE").map(lambda s: (enc.ready_for_query(s), m.ReadyForQuery(s))),
    error_fields.map(lambda a: (enc.error_response(*a), m.ErrorResponse(_fields(*a)))),
    error_fields.map(lambda a: (enc.notice_response(*a), m.NoticeResponse(_fields(*a)))),
    text.map(lambda s: (enc.command_complete(s), m.CommandComplete(s))),
    st.lists(field_desc, max_size=3).map(lambda f: (enc.row_description(f), m.RowDescription(tuple(f)))),
    st.lists(value, max_size=5).map(lambda v: (enc.data_row(v), m.DataRow(tuple(v)))),
    st.just((enc.parse_complete(), m.ParseComplete())),
    st.just((enc.bind_complete(), m.BindComplete())),
    st.just((enc.close_complete(), m.CloseComplete())),
    st.just((enc.no_data(), m.NoData())),
    st.lists(u32, max_size=4).map(lambda o: (enc.parameter_description(o), m.ParameterDescription(tuple(o)))),
    st.just((enc.empty_query_response(), m.EmptyQueryResponse())),
    st.just((enc.portal_suspended(), m.PortalSuspended())),
    st.tuples(st.integers(0, 1), fmts).map(lambda a: (enc.copy_in_response(*a), m.CopyInResponse(*a))),
    st.tuples(st.integers(0, 1), fmts).map(lambda a: (enc.copy_out_response(*a), m.CopyOutResponse(*a))),
    st.tuples(st.integers(0, 1), fmts).map(lambda a: (enc.copy_both_response(*a), m.CopyBothResponse(*a))),
    st.tuples(i32, text, text).map(lambda a: (enc.notification_response(*a), m.NotificationResponse(*a))),
    st.tuples(i32, st.lists(text, max_size=3).map(tuple)).map(
        lambda a: (enc.negotiate_protocol_version(*a), m.NegotiateProtocolVersion(*a))
    ),
    value.map(lambda v: (enc.function_call_response(v), m.FunctionCallResponse(v))),
    blob.map(lambda b: (enc.copy_data(b), m.CopyData(b))),
    st.just((enc.copy_done(), m.CopyDone())),
)


@SETTINGS
@given(FRONTEND)
def test_frontend_round_trip(pair):
    raw, expected = pair
    assert _front(raw) == expected


@SETTINGS
@given(BACKEND)
def test_backend_round_trip(pair):
    raw, expected = pair
    if isinstance(expected, m.EncryptionResponse):
        framer = BackendFramer()
        framer.expect_encryption_response()
        (msg,) = framer.feed(raw)
        assert m.decode_backend(msg) == expected
    else:
        assert _back(raw) == expected


@SETTINGS
@given(st.one_of(st.binary(max_size=30), text.map(str.encode)))
def test_password_message_round_trip(pw):
    pw = pw.replace(b"\0", b"")
    (msg,) = FrontendFramer(startup=False).feed(enc.password_message(pw))
    assert m.decode_password_message(msg.body) == m.PasswordMessage(pw)


@SETTINGS
@given(text.filter(bool), st.none() | blob)
def test_sasl_initial_response_round_trip(mech, data):
    (msg,) = FrontendFramer(startup=False).feed(enc.sasl_initial_response(mech, data))
    assert m.decode_sasl_initial_response(msg.body) == m.SASLInitialResponse(mech, data)
    assert m.decode_sasl_response(enc.sasl_response(b"xyz")[5:]) == m.SASLResponse(b"xyz")


def test_error_fields_properties_and_extra_fields():
    raw = enc.error_response("FATAL", "28P01", "no", detail="d", hint="h", fields={"P": "7"})
    err = _back(raw)
    assert (err.severity, err.sqlstate, err.message) == ("FATAL", "28P01", "no")
    assert err.fields == {"S": "FATAL", "V": "FATAL", "C": "28P01", "M": "no", "D": "d", "H": "h", "P": "7"}


def test_other_authentication_requests_are_kept_raw():
    raw = b"R" + struct.pack("!ii", 12, 8) + b"tok1"
    assert _back(raw) == m.AuthenticationOther(8, b"tok1")


# --- Malformed bodies: PgProtocolError, never anything else ------------------------------------
BAD_FRONTEND = [
    b"Q\x00\x00\x00\x08abcd",  # no NUL
    b"Q\x00\x00\x00\x07a\x00b",  # trailing byte
    b"Q\x00\x00\x00\x07\xff\xfe\x00",  # not UTF-8
    b"S\x00\x00\x00\x05x",  # Sync with a body
    b"D\x00\x00\x00\x07Xs\x00",  # bad Describe kind
    b"E\x00\x00\x00\x07\x00\x00\x00",  # truncated Int32
    b"B\x00\x00\x00\x0e\x00\x00\x00\x00\x00\x01\x7f\xff\xff\xff",  # value length past the end
    b"B\x00\x00\x00\x0e\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe",  # value length -2
    # two formats, one parameter ("bind message has 2 parameter formats but 1 parameters")
    b"B\x00\x00\x00\x15\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00",
    b"\x00\x00\x00\x0c\x00\x03\x00\x00user",  # startup pairs without terminator
]
BAD_BACKEND = [
    b"Z\x00\x00\x00\x05X",
    b"R\x00\x00\x00\x08\x00\x00\x00\x04",  # unknown auth request 4
    b"R\x00\x00\x00\x0a\x00\x00\x00\x05\x01\x02",  # short md5 salt
    b"E\x00\x00\x00\x07SERR",  # unterminated field
    b"D\x00\x00\x00\x06\x00\x05",  # 5 columns promised, none present
    b"T\x00\x00\x00\x08\x00\x01a\x00",  # truncated field description
]


@pytest.mark.parametrize("raw", BAD_FRONTEND)
def test_bad_frontend_bodies(raw):
    framer = FrontendFramer(startup=raw[:1] == b"\x00")
    (msg,) = framer.feed(raw)
    with pytest.raises(PgProtocolError) as info:
        m.decode_frontend(msg)
    assert info.value.sqlstate == "08P01"


@pytest.mark.parametrize("raw", BAD_BACKEND)
def test_bad_backend_bodies(raw):
    (msg,) = BackendFramer().feed(raw)
    with pytest.raises(PgProtocolError):
        m.decode_backend(msg)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(b"BCdcfDEHFpPQSXRK23GWIVvnNAtZTs1")), st.binary(max_size=40))
def test_any_body_decodes_or_raises_protocol_error(type_byte, body):
    msg = Message(bytes([type_byte]), bytes([type_byte]) + struct.pack("!i", len(body) + 4) + body, 5)
    for decode in (m.decode_frontend, m.decode_backend):
        try:
            decode(msg)
        except PgProtocolError:
            pass
    for helper in (m.decode_password_message, m.decode_sasl_initial_response, m.decode_sasl_response):
        try:
            helper(body)
        except PgProtocolError:
            pass
    try:
        m.decode_startup(body)
    except PgProtocolError:
        pass


def test_encoders_refuse_misuse_with_value_error():
    with pytest.raises(ValueError):
        enc.query("a\0b")
    with pytest.raises(ValueError):
        enc.ready_for_query("X")
    with pytest.raises(ValueError):
        enc.data_row([b""] * 70000)
    with pytest.raises(ValueError):
        enc.backend_key_data(1, -1)
    with pytest.raises(ValueError):
        enc.error_response("ERROR", "123", "x")
    with pytest.raises(ValueError):
        enc.describe("X")


def test_reader_bounds():
    r = Reader(b"\x00\x01\x00\x00\x00\x02ab\x00xyz")
    assert r.int16() == 1
    assert r.int32() == 2
    assert r.cstring() == "ab"
    with r.restrict_to(2):
        assert r.bytes(2) == b"xy"
    assert r.remaining == 1
    with pytest.raises(PgProtocolError):
        r.int16()
    with pytest.raises(PgProtocolError):
        r.bytes(-1)
    with pytest.raises(PgProtocolError):
        r.expect_end()
    with pytest.raises(PgProtocolError):
        with r.restrict_to(5):
            pass
    r2 = Reader(b"abc")
    with pytest.raises(PgProtocolError):
        with r2.restrict_to(2):
            r2.bytes(1)  # one byte of the field left unread
    assert Reader(b"caf\xc3\xa9\x00").cstring() == "café"
    assert Reader(b"caf\xe9\x00", encoding="latin-1").cstring() == "café"
