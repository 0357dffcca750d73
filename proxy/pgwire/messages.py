"""Decoded PostgreSQL v3 messages (frozen dataclasses) and the decoders that produce them.

Decoding is on request only (the framers in `framing.py` never look inside a body): call
`decode_frontend(msg)` / `decode_backend(msg)` on a framed `Message`, or `decode_startup(body)`
and the 'p'-message helpers. Each returns a frozen dataclass named after the message in
https://www.postgresql.org/docs/15/protocol-message-formats.html, whose fields follow the wire
order. Bodies are read through `reader.Reader`, so truncated, overlong or trailing fields raise
`PgProtocolError` (08P01) and nothing else. The encoders, the other direction, are in `encode.py`.

Text is decoded with `encoding` (default UTF-8, strict): a proxy that must serve clients in another
client_encoding passes it, or works on the byte fields (`Bind` values, `DataRow` values, `CopyData`,
SASL payloads) that are always kept as bytes.

Integer conventions: OIDs are unsigned 32-bit (the docs say Int32; OIDs above 2**31 exist), counts
are unsigned 16-bit (PostgreSQL reads them with pq_getmsgint, so up to 65535 parameters), and the
BackendKeyData/CancelRequest secret is unsigned 32-bit so proxies can mint it from 32 random bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

from .errors import PROTOCOL_VIOLATION, PgProtocolError
from .framing import CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, Message
from .reader import Reader

__all__ = [
    # frontend
    "StartupMessage", "SSLRequest", "GSSENCRequest", "CancelRequest", "Query", "Parse", "Bind",
    "Execute", "Describe", "Close", "Sync", "Flush", "Terminate", "CopyData", "CopyDone",
    "CopyFail", "FunctionCall", "AuthResponse", "PasswordMessage", "SASLInitialResponse",
    "SASLResponse",
    # backend
    "EncryptionResponse", "AuthenticationOk", "AuthenticationCleartextPassword",
    "AuthenticationMD5Password", "AuthenticationSASL", "AuthenticationSASLContinue",
    "AuthenticationSASLFinal", "AuthenticationOther", "ParameterStatus", "BackendKeyData",
    "ReadyForQuery", "ErrorResponse", "NoticeResponse", "CommandComplete", "FieldDescription",
    "RowDescription", "DataRow", "ParseComplete", "BindComplete", "CloseComplete", "NoData",
    "ParameterDescription", "EmptyQueryResponse", "PortalSuspended", "CopyInResponse",
    "CopyOutResponse", "CopyBothResponse", "NotificationResponse", "NegotiateProtocolVersion",
    "FunctionCallResponse",
    # decoders
    "decode_frontend", "decode_backend", "decode_startup", "decode_password_message",
    "decode_sasl_initial_response", "decode_sasl_response",
]  # fmt: skip

def _frozen(cls: type) -> type:
    return dataclass(frozen=True, slots=True)(cls)


# ---------------------------------------------------------------------------------------------
# Decoded messages. Field order follows the wire, so `Cls(*fields)` matches the encoder arguments.
# Frontend: https://www.postgresql.org/docs/15/protocol-message-formats.html ("(F)").


@_frozen
class StartupMessage:
    protocol: int
    params: dict[str, str]


@_frozen
class SSLRequest:
    pass


@_frozen
class GSSENCRequest:
    pass


@_frozen
class CancelRequest:
    pid: int
    secret: int


@_frozen
class Query:
    sql: str


@_frozen
class Parse:
    name: str
    query: str
    param_types: tuple[int, ...] = ()


@_frozen
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@_frozen
class Execute:
    portal: str
    max_rows: int


@_frozen
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str


@_frozen
class Close:
    kind: str  # "S" statement or "P" portal
    name: str


@_frozen
class Sync:
    pass


@_frozen
class Flush:
    pass


@_frozen
class Terminate:
    pass


@_frozen
class CopyData:
    data: bytes


@_frozen
class CopyDone:
    pass


@_frozen
class CopyFail:
    message: str


@_frozen
class FunctionCall:
    oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int


@_frozen
class AuthResponse:
    """A 'p' message before its meaning is known: which one it is depends on the auth exchange."""

    data: bytes


@_frozen
class PasswordMessage:
    password: bytes  # cleartext, or b"md5" + 32 hex digits


@_frozen
class SASLInitialResponse:
    mechanism: str
    data: bytes | None  # None: the client sent length -1 ("no initial response")


@_frozen
class SASLResponse:
    data: bytes


# Backend ("(B)").


@_frozen
class EncryptionResponse:
    """The single byte answering SSLRequest/GSSENCRequest: 'S' or 'G' (go ahead) or 'N'."""

    answer: str


@_frozen
class AuthenticationOk:
    pass


@_frozen
class AuthenticationCleartextPassword:
    pass


@_frozen
class AuthenticationMD5Password:
    salt: bytes


@_frozen
class AuthenticationSASL:
    mechanisms: tuple[str, ...]


@_frozen
class AuthenticationSASLContinue:
    data: bytes


@_frozen
class AuthenticationSASLFinal:
    data: bytes


@_frozen
class AuthenticationOther:
    """KerberosV5 (2), SCMCredential (6), GSS (7), GSSContinue (8), SSPI (9): relayed, not spoken."""

    code: int
    data: bytes


@_frozen
class ParameterStatus:
    name: str
    value: str


@_frozen
class BackendKeyData:
    pid: int
    secret: int


@_frozen
class ReadyForQuery:
    status: str  # "I" idle, "T" in a transaction block, "E" in a failed transaction block


class _Fields:
    """ErrorResponse/NoticeResponse: fields by code letter.

    https://www.postgresql.org/docs/15/protocol-error-fields.html (S severity, V non-localized
    severity, C SQLSTATE, M message, D detail, H hint, P position, W where, ...).
    """

    __slots__ = ()
    fields: Mapping[str, str]

    @property
    def severity(self) -> str:
        return self.fields.get("V") or self.fields.get("S", "")

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@_frozen
class ErrorResponse(_Fields):
    fields: dict[str, str]


@_frozen
class NoticeResponse(_Fields):
    fields: dict[str, str]


@_frozen
class CommandComplete:
    tag: str


@_frozen
class FieldDescription:
    name: str
    table_oid: int = 0
    column: int = 0  # attribute number, Int16; negative for system columns
    type_oid: int = 25  # text
    type_size: int = -1  # pg_type.typlen; -1 variable length
    type_modifier: int = -1
    format: int = 0  # 0 text, 1 binary


@_frozen
class RowDescription:
    fields: tuple[FieldDescription, ...]


@_frozen
class DataRow:
    values: tuple[bytes | None, ...]


@_frozen
class ParseComplete:
    pass


@_frozen
class BindComplete:
    pass


@_frozen
class CloseComplete:
    pass


@_frozen
class NoData:
    pass


@_frozen
class ParameterDescription:
    type_oids: tuple[int, ...]


@_frozen
class EmptyQueryResponse:
    pass


@_frozen
class PortalSuspended:
    pass


@_frozen
class CopyInResponse:
    format: int  # overall: 0 text, 1 binary
    column_formats: tuple[int, ...]


@_frozen
class CopyOutResponse:
    format: int
    column_formats: tuple[int, ...]


@_frozen
class CopyBothResponse:
    format: int
    column_formats: tuple[int, ...]


@_frozen
class NotificationResponse:
    pid: int
    channel: str
    payload: str


@_frozen
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized_options: tuple[str, ...]


@_frozen
class FunctionCallResponse:
    value: bytes | None


# ---------------------------------------------------------------------------------------------
# Decoders. Each reads a body through a Reader; the dispatchers then require the end of the body.


def _formats(r: Reader) -> tuple[int, ...]:
    return tuple(r.int16() for _ in range(r.uint16()))


def _values(r: Reader) -> tuple[bytes | None, ...]:
    out: list[bytes | None] = []
    for _ in range(r.uint16()):
        n = r.int32()
        if n == -1:
            out.append(None)
        elif n < 0:
            raise PgProtocolError(f"invalid value length {n}", PROTOCOL_VIOLATION)
        else:
            out.append(r.bytes(n))
    return tuple(out)


def _check_formats(formats: tuple[int, ...], values: int, what: str) -> None:
    # PostgreSQL: "bind message has %d parameter formats but %d parameters" (08P01).
    if len(formats) > 1 and len(formats) != values:
        raise PgProtocolError(
            f"{what} has {len(formats)} parameter formats but {values} parameters", PROTOCOL_VIOLATION
        )


def _kind(r: Reader, what: str) -> str:
    kind = r.byte1()
    if kind not in (b"S", b"P"):
        raise PgProtocolError(f"invalid {what} message subtype {kind!r}", PROTOCOL_VIOLATION)
    return kind.decode("ascii")


def _dec_bind(r: Reader) -> Bind:
    portal, statement = r.cstring(), r.cstring()
    formats = _formats(r)
    params = _values(r)
    _check_formats(formats, len(params), "bind message")
    return Bind(portal, statement, formats, params, _formats(r))


def _dec_function_call(r: Reader) -> FunctionCall:
    oid = r.uint32()
    formats = _formats(r)
    args = _values(r)
    _check_formats(formats, len(args), "function call message")
    return FunctionCall(oid, formats, args, r.int16())


_FRONTEND: Mapping[bytes, Callable[[Reader], Any]] = MappingProxyType(
    {
        b"Q": lambda r: Query(r.cstring()),
        b"P": lambda r: Parse(r.cstring(), r.cstring(), tuple(r.uint32() for _ in range(r.uint16()))),
        b"B": _dec_bind,
        b"E": lambda r: Execute(r.cstring(), r.int32()),
        b"D": lambda r: Describe(_kind(r, "DESCRIBE"), r.cstring()),
        b"C": lambda r: Close(_kind(r, "CLOSE"), r.cstring()),
        b"S": lambda r: Sync(),
        b"H": lambda r: Flush(),
        b"X": lambda r: Terminate(),
        b"d": lambda r: CopyData(r.rest()),
        b"c": lambda r: CopyDone(),
        b"f": lambda r: CopyFail(r.cstring()),
        b"F": _dec_function_call,
        b"p": lambda r: AuthResponse(r.rest()),
    }
)


def _dec_authentication(r: Reader) -> object:
    # https://www.postgresql.org/docs/15/protocol-message-formats.html (AuthenticationOk ... SASLFinal)
    code = r.int32()
    if code == 0:
        return AuthenticationOk()
    if code == 3:
        return AuthenticationCleartextPassword()
    if code == 5:
        return AuthenticationMD5Password(r.bytes(4))
    if code == 10:
        mechanisms = []
        while (name := r.cstring()) != "":
            mechanisms.append(name)
        return AuthenticationSASL(tuple(mechanisms))
    if code == 11:
        return AuthenticationSASLContinue(r.rest())
    if code == 12:
        return AuthenticationSASLFinal(r.rest())
    if code in (2, 6, 7, 8, 9):
        return AuthenticationOther(code, r.rest())
    raise PgProtocolError(f"unknown authentication request {code}", PROTOCOL_VIOLATION)


def _dec_fields(r: Reader) -> dict[str, str]:
    # https://www.postgresql.org/docs/15/protocol-error-fields.html: Byte1 code + String, ended by \0.
    fields: dict[str, str] = {}
    while (code := r.byte1()) != b"\0":
        fields[code.decode("latin-1")] = r.cstring()
    return fields


def _dec_field_description(r: Reader) -> FieldDescription:
    return FieldDescription(r.cstring(), r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(), r.int16())


def _dec_ready(r: Reader) -> ReadyForQuery:
    status = r.byte1()
    if status not in (b"I", b"T", b"E"):
        raise PgProtocolError(f"invalid transaction status {status!r}", PROTOCOL_VIOLATION)
    return ReadyForQuery(status.decode("ascii"))


def _dec_value(r: Reader) -> bytes | None:
    n = r.int32()
    if n == -1:
        return None
    return r.bytes(n)  # a negative n other than -1 fails the bounds check


_BACKEND: Mapping[bytes, Callable[[Reader], Any]] = MappingProxyType(
    {
        b"R": _dec_authentication,
        b"S": lambda r: ParameterStatus(r.cstring(), r.cstring()),
        b"K": lambda r: BackendKeyData(r.int32(), r.uint32()),
        b"Z": _dec_ready,
        b"E": lambda r: ErrorResponse(_dec_fields(r)),
        b"N": lambda r: NoticeResponse(_dec_fields(r)),
        b"C": lambda r: CommandComplete(r.cstring()),
        b"T": lambda r: RowDescription(tuple(_dec_field_description(r) for _ in range(r.uint16()))),
        b"D": lambda r: DataRow(_values(r)),
        b"1": lambda r: ParseComplete(),
        b"2": lambda r: BindComplete(),
        b"3": lambda r: CloseComplete(),
        b"n": lambda r: NoData(),
        b"t": lambda r: ParameterDescription(tuple(r.uint32() for _ in range(r.uint16()))),
        b"I": lambda r: EmptyQueryResponse(),
        b"s": lambda r: PortalSuspended(),
        b"G": lambda r: CopyInResponse(r.int8(), _formats(r)),
        b"H": lambda r: CopyOutResponse(r.int8(), _formats(r)),
        b"W": lambda r: CopyBothResponse(r.int8(), _formats(r)),
        b"A": lambda r: NotificationResponse(r.int32(), r.cstring(), r.cstring()),
        b"v": lambda r: NegotiateProtocolVersion(r.int32(), tuple(r.cstring() for _ in range(r.int32()))),
        b"V": lambda r: FunctionCallResponse(_dec_value(r)),
        b"d": lambda r: CopyData(r.rest()),
        b"c": lambda r: CopyDone(),
    }
)


def _run(table: Mapping[bytes, Callable[[Reader], Any]], msg: Message, encoding: str) -> Any:
    fn = table.get(msg.type)
    if fn is None:
        raise PgProtocolError(f"no decoder for message type {msg.type!r}", PROTOCOL_VIOLATION)
    r = Reader(msg.body, encoding)
    value = fn(r)
    r.expect_end()
    return value


def decode_frontend(msg: Message, encoding: str = "utf-8") -> Any:
    """Decode a client->server message. 'p' gives `AuthResponse`; see the helpers for its meaning."""
    if not msg.type:
        return decode_startup(msg.body, encoding)
    return _run(_FRONTEND, msg, encoding)


def decode_backend(msg: Message, encoding: str = "utf-8") -> Any:
    """Decode a server->client message (a startup-phase message is the SSL/GSS answer byte)."""
    if not msg.type:
        answer = bytes(msg.raw)
        if answer not in (b"S", b"G", b"N"):
            raise PgProtocolError(f"invalid encryption response {answer!r}", PROTOCOL_VIOLATION)
        return EncryptionResponse(answer.decode("ascii"))
    return _run(_BACKEND, msg, encoding)


def decode_startup(body: bytes | memoryview, encoding: str = "utf-8") -> Any:
    """Decode a startup packet body (after the length word): StartupMessage or a request."""
    r = Reader(body, encoding)
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        value: Any = SSLRequest()
    elif code == GSSENC_REQUEST_CODE:
        value = GSSENCRequest()
    elif code == CANCEL_REQUEST_CODE:
        value = CancelRequest(r.int32(), r.uint32())
    elif code >> 16 == 3:
        # name/value string pairs, then a lone terminating \0 (protocol-message-formats.html).
        params: dict[str, str] = {}
        while (name := r.cstring()) != "":
            params[name] = r.cstring()
        value = StartupMessage(code, params)
    else:
        raise PgProtocolError(f"unsupported startup code {code}", PROTOCOL_VIOLATION)
    r.expect_end()
    return value


def decode_password_message(body: bytes | memoryview) -> PasswordMessage:
    """'p' answering AuthenticationCleartextPassword or AuthenticationMD5Password."""
    r = Reader(body)
    value = PasswordMessage(r.cstring_bytes())
    r.expect_end()
    return value


def decode_sasl_initial_response(body: bytes | memoryview, encoding: str = "utf-8") -> SASLInitialResponse:
    """'p' answering AuthenticationSASL (https://www.postgresql.org/docs/15/sasl-authentication.html)."""
    r = Reader(body, encoding)
    mechanism = r.cstring()
    n = r.int32()
    value = SASLInitialResponse(mechanism, None if n == -1 else r.bytes(n))
    r.expect_end()
    return value


def decode_sasl_response(body: bytes | memoryview) -> SASLResponse:
    """'p' answering AuthenticationSASLContinue: the body is the SASL data, nothing else."""
    return SASLResponse(bytes(body))

