"""Encoders for PostgreSQL v3 messages, both directions: arguments in, the whole message as bytes.

One function per message of https://www.postgresql.org/docs/15/protocol-message-formats.html
(`query("select 1")`, `error_response("FATAL", "08P01", "...")`, `ready_for_query("I")`); the
arguments follow the wire order of the matching dataclass in `messages.py`, so
`decode_*(encode(...))` gives that dataclass back. They raise `ValueError` on misuse (a NUL inside
a string, a count that does not fit an Int16, a 6-letter SQLSTATE): that is our bug, not the peer's.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from .framing import CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_VERSION_3_0, SSL_REQUEST_CODE
from .messages import FieldDescription

__all__ = [
    # frontend
    "startup_message", "ssl_request", "gssenc_request", "cancel_request", "query", "parse",
    "bind", "execute", "describe", "close", "sync", "flush", "terminate", "copy_data",
    "copy_done", "copy_fail", "function_call", "password_message", "sasl_initial_response",
    "sasl_response",
    # backend
    "encryption_response", "authentication_ok", "authentication_cleartext_password",
    "authentication_md5_password", "authentication_sasl", "authentication_sasl_continue",
    "authentication_sasl_final", "parameter_status", "backend_key_data", "ready_for_query",
    "error_response", "notice_response", "command_complete", "row_description", "data_row",
    "parse_complete", "bind_complete", "close_complete", "no_data", "parameter_description",
    "empty_query_response", "portal_suspended", "copy_in_response", "copy_out_response",
    "copy_both_response", "notification_response", "negotiate_protocol_version",
    "function_call_response",
]  # fmt: skip

_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")

# ---------------------------------------------------------------------------------------------
# Shared packing helpers.


def _pack(st: struct.Struct, value: int) -> bytes:
    try:
        return st.pack(value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit the field: {exc}") from None


def _count(n: int) -> bytes:
    return _pack(_U16, n)


def _cstr(value: str | bytes, encoding: str = "utf-8") -> bytes:
    raw = value.encode(encoding) if isinstance(value, str) else bytes(value)
    if b"\0" in raw:
        raise ValueError("a PostgreSQL string cannot contain NUL")
    return raw + b"\0"


def _msg(type_: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return type_ + _pack(_I32, len(body) + 4) + body


def _startup(code: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _pack(_I32, len(body) + 8) + _pack(_I32, code) + body


def _formats_out(formats: Sequence[int]) -> bytes:
    return _count(len(formats)) + b"".join(_pack(_I16, f) for f in formats)


def _values_out(values: Sequence[bytes | None]) -> bytes:
    parts = [_count(len(values))]
    for v in values:
        parts.append(b"\xff\xff\xff\xff" if v is None else _pack(_I32, len(v)) + bytes(v))
    return b"".join(parts)


def _oids_out(oids: Sequence[int]) -> bytes:
    return _count(len(oids)) + b"".join(_pack(_U32, o) for o in oids)


def _kind_out(kind: str | bytes) -> bytes:
    k = kind.encode("ascii") if isinstance(kind, str) else kind
    if k not in (b"S", b"P"):
        raise ValueError("kind must be 'S' (statement) or 'P' (portal)")
    return k


# Frontend.


def startup_message(params: Mapping[str, str], protocol: int = PROTOCOL_VERSION_3_0) -> bytes:
    pairs = b"".join(_cstr(k) + _cstr(v) for k, v in params.items())
    return _startup(protocol, pairs, b"\0")


def ssl_request() -> bytes:
    return _startup(SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    return _startup(GSSENC_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return _startup(CANCEL_REQUEST_CODE, _pack(_I32, pid), _pack(_U32, secret))


def query(sql: str) -> bytes:
    return _msg(b"Q", _cstr(sql))


def parse(name: str, query: str, param_types: Sequence[int] = ()) -> bytes:
    return _msg(b"P", _cstr(name), _cstr(query), _oids_out(param_types))


def bind(
    portal: str,
    statement: str,
    params: Sequence[bytes | None] = (),
    *,
    param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    return _msg(
        b"B", _cstr(portal), _cstr(statement), _formats_out(param_formats), _values_out(params),
        _formats_out(result_formats),
    )  # fmt: skip


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return _msg(b"E", _cstr(portal), _pack(_I32, max_rows))


def describe(kind: str | bytes, name: str = "") -> bytes:
    return _msg(b"D", _kind_out(kind), _cstr(name))


def close(kind: str | bytes, name: str = "") -> bytes:
    return _msg(b"C", _kind_out(kind), _cstr(name))


def sync() -> bytes:
    return b"S\0\0\0\x04"


def flush() -> bytes:
    return b"H\0\0\0\x04"


def terminate() -> bytes:
    return b"X\0\0\0\x04"


def copy_data(data: bytes) -> bytes:
    return _msg(b"d", bytes(data))


def copy_done() -> bytes:
    return b"c\0\0\0\x04"


def copy_fail(message: str) -> bytes:
    return _msg(b"f", _cstr(message))


def function_call(
    oid: int, args: Sequence[bytes | None] = (), *, arg_formats: Sequence[int] = (), result_format: int = 0
) -> bytes:
    return _msg(
        b"F", _pack(_U32, oid), _formats_out(arg_formats), _values_out(args), _pack(_I16, result_format)
    )


def password_message(password: str | bytes) -> bytes:
    """Cleartext password, or the b"md5..." string from `auth.md5_password`."""
    return _msg(b"p", _cstr(password))


def sasl_initial_response(mechanism: str, data: bytes | None) -> bytes:
    payload = b"\xff\xff\xff\xff" if data is None else _pack(_I32, len(data)) + bytes(data)
    return _msg(b"p", _cstr(mechanism), payload)


def sasl_response(data: bytes) -> bytes:
    return _msg(b"p", bytes(data))


# Backend.


def encryption_response(answer: str | bytes) -> bytes:
    a = answer.encode("ascii") if isinstance(answer, str) else bytes(answer)
    if a not in (b"S", b"G", b"N"):
        raise ValueError("answer must be 'S', 'G' or 'N'")
    return a


def _auth(code: int, *parts: bytes) -> bytes:
    return _msg(b"R", _pack(_I32, code), *parts)


def authentication_ok() -> bytes:
    return _auth(0)


def authentication_cleartext_password() -> bytes:
    return _auth(3)


def authentication_md5_password(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise ValueError("the MD5 salt is 4 bytes")
    return _auth(5, bytes(salt))


def authentication_sasl(mechanisms: Sequence[str] = ("SCRAM-SHA-256",)) -> bytes:
    return _auth(10, *(_cstr(m) for m in mechanisms), b"\0")


def authentication_sasl_continue(data: bytes) -> bytes:
    return _auth(11, bytes(data))


def authentication_sasl_final(data: bytes) -> bytes:
    return _auth(12, bytes(data))


def parameter_status(name: str, value: str) -> bytes:
    return _msg(b"S", _cstr(name), _cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return _msg(b"K", _pack(_I32, pid), _pack(_U32, secret))


def ready_for_query(status: str | bytes) -> bytes:
    s = status.encode("ascii") if isinstance(status, str) else bytes(status)
    if s not in (b"I", b"T", b"E"):
        raise ValueError("status must be 'I', 'T' or 'E'")
    return _msg(b"Z", s)


def _fields_out(
    severity: str, sqlstate: str, message: str, detail: str | None, hint: str | None,
    extra: Mapping[str, str] | None,
) -> bytes:  # fmt: skip
    if len(sqlstate) != 5:
        raise ValueError("a SQLSTATE is 5 characters")
    # 'S' may be localized; 'V' (since 9.6) never is, so both carry our English severity.
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    if detail is not None:
        fields["D"] = detail
    if hint is not None:
        fields["H"] = hint
    fields.update(extra or {})
    parts = []
    for code, value in fields.items():
        if len(code) != 1 or code == "\0":
            raise ValueError(f"invalid error field code {code!r}")
        parts.append(code.encode("latin-1") + _cstr(value))
    parts.append(b"\0")
    return b"".join(parts)


def error_response(
    severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> bytes:  # fmt: skip
    """ErrorResponse; severity ERROR, FATAL or PANIC. `fields` adds codes such as 'P' or 'n'."""
    return _msg(b"E", _fields_out(severity, sqlstate, message, detail, hint, fields))


def notice_response(
    severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> bytes:  # fmt: skip
    """NoticeResponse; severity WARNING, NOTICE, DEBUG, INFO or LOG."""
    return _msg(b"N", _fields_out(severity, sqlstate, message, detail, hint, fields))


def command_complete(tag: str) -> bytes:
    return _msg(b"C", _cstr(tag))


def row_description(fields: Sequence[FieldDescription | str]) -> bytes:
    """Columns as FieldDescription, or bare names for text columns."""
    parts = [_count(len(fields))]
    for f in fields:
        fd = FieldDescription(f) if isinstance(f, str) else f
        parts += (
            _cstr(fd.name), _pack(_U32, fd.table_oid), _pack(_I16, fd.column), _pack(_U32, fd.type_oid),
            _pack(_I16, fd.type_size), _pack(_I32, fd.type_modifier), _pack(_I16, fd.format),
        )  # fmt: skip
    return _msg(b"T", *parts)


def data_row(values: Sequence[bytes | None]) -> bytes:
    return _msg(b"D", _values_out(values))


def parse_complete() -> bytes:
    return b"1\0\0\0\x04"


def bind_complete() -> bytes:
    return b"2\0\0\0\x04"


def close_complete() -> bytes:
    return b"3\0\0\0\x04"


def no_data() -> bytes:
    return b"n\0\0\0\x04"


def parameter_description(type_oids: Sequence[int]) -> bytes:
    return _msg(b"t", _oids_out(type_oids))


def empty_query_response() -> bytes:
    return b"I\0\0\0\x04"


def portal_suspended() -> bytes:
    return b"s\0\0\0\x04"


def _copy_response(type_: bytes, format: int, column_formats: Sequence[int]) -> bytes:
    return _msg(type_, _pack(_I8, format), _formats_out(column_formats))


def copy_in_response(format: int, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"G", format, column_formats)


def copy_out_response(format: int, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"H", format, column_formats)


def copy_both_response(format: int, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"W", format, column_formats)


def notification_response(pid: int, channel: str, payload: str = "") -> bytes:
    return _msg(b"A", _pack(_I32, pid), _cstr(channel), _cstr(payload))


def negotiate_protocol_version(newest_minor: int, unrecognized_options: Sequence[str] = ()) -> bytes:
    opts = b"".join(_cstr(o) for o in unrecognized_options)
    return _msg(b"v", _pack(_I32, newest_minor), _pack(_I32, len(unrecognized_options)), opts)


def function_call_response(value: bytes | None) -> bytes:
    return _msg(b"V", b"\xff\xff\xff\xff" if value is None else _pack(_I32, len(value)) + bytes(value))
