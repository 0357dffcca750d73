"""The one exception the PostgreSQL wire codec raises, and the SQLSTATE codes proxies answer with.

Contract (h11's, see STYLE.md section 1): `FrontendFramer.feed`, `BackendFramer.feed`, every
`decode_*` function and the SCRAM/md5 state machines either return a value or raise
`PgProtocolError`. Any other exception escaping them is a bug in this package, not a fault of the
peer. Encoders raise `ValueError` when *we* misuse them (a NUL inside a C string, a field that does
not fit its Int16), since that is our bug and must not be answered to the peer as its fault.

SQLSTATE values are from PostgreSQL's errcodes.txt (Appendix A of the manual):
https://www.postgresql.org/docs/15/errcodes-appendix.html
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "PgProtocolError",
    "PROTOCOL_VIOLATION",
    "CONNECTION_FAILURE",
    "ADMIN_SHUTDOWN",
    "INVALID_PASSWORD",
    "INVALID_AUTHORIZATION_SPECIFICATION",
    "INVALID_CATALOG_NAME",
    "TOO_MANY_CONNECTIONS",
    "FEATURE_NOT_SUPPORTED",
    "SYNTAX_ERROR",
    "INTERNAL_ERROR",
    "IN_FAILED_SQL_TRANSACTION",
    "QUERY_CANCELED",
    "PROGRAM_LIMIT_EXCEEDED",
    "OBJECT_IN_USE",
    "SQLSTATE_NAMES",
]

# Class 08: connection exceptions. 08P01 is what the backend itself answers to malformed messages.
PROTOCOL_VIOLATION = "08P01"
CONNECTION_FAILURE = "08006"
# Class 57: operator intervention (pg_terminate_backend, shutdown; 57014 is a cancelled statement).
ADMIN_SHUTDOWN = "57P01"
QUERY_CANCELED = "57014"
# Class 28: what PostgreSQL answers to failed authentication (28P01) or an unknown/forbidden role.
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
# Class 3D: database does not exist.
INVALID_CATALOG_NAME = "3D000"
# Class 53: "sorry, too many clients already"; a pool that is full answers the same.
TOO_MANY_CONNECTIONS = "53300"
# Class 54: a message (statement) larger than the configured limit.
PROGRAM_LIMIT_EXCEEDED = "54000"
# Class 55: DROP DATABASE of a database "being accessed by other users".
OBJECT_IN_USE = "55006"
# Class 0A: also what the postmaster answers to an unsupported protocol version.
FEATURE_NOT_SUPPORTED = "0A000"
SYNTAX_ERROR = "42601"
# Class XX: our own bugs (STYLE.md habit 6: log the stack, answer XX000, close).
INTERNAL_ERROR = "XX000"
# Class 25: "current transaction is aborted, commands ignored until end of transaction block".
IN_FAILED_SQL_TRANSACTION = "25P02"

SQLSTATE_NAMES = MappingProxyType(
    {
        PROTOCOL_VIOLATION: "protocol_violation",
        CONNECTION_FAILURE: "connection_failure",
        ADMIN_SHUTDOWN: "admin_shutdown",
        QUERY_CANCELED: "query_canceled",
        INVALID_PASSWORD: "invalid_password",
        INVALID_AUTHORIZATION_SPECIFICATION: "invalid_authorization_specification",
        INVALID_CATALOG_NAME: "invalid_catalog_name",
        TOO_MANY_CONNECTIONS: "too_many_connections",
        FEATURE_NOT_SUPPORTED: "feature_not_supported",
        SYNTAX_ERROR: "syntax_error",
        INTERNAL_ERROR: "internal_error",
        IN_FAILED_SQL_TRANSACTION: "in_failed_sql_transaction",
        PROGRAM_LIMIT_EXCEEDED: "program_limit_exceeded",
        OBJECT_IN_USE: "object_in_use",
    }
)


class PgProtocolError(Exception):
    """The peer sent bytes that are not acceptable PostgreSQL protocol (or failed authentication).

    `sqlstate` is the code to put in the ErrorResponse a proxy answers with before closing
    (08P01 unless a more precise class applies, e.g. 28P01 for a wrong SCRAM proof).
    `messages` holds framed messages completed earlier in the same `feed()` call, before the bad
    bytes, so a caller may still forward what arrived intact; ignoring it is always safe.
    """

    def __init__(self, message: str, sqlstate: str = PROTOCOL_VIOLATION) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.messages: list[object] = []

    def __repr__(self) -> str:
        return f"PgProtocolError({self.message!r}, sqlstate={self.sqlstate!r})"
