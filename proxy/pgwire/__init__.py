"""Sans-IO PostgreSQL v3 wire protocol: framing, message codecs, SCRAM/md5 authentication.

No sockets and no asyncio here; `tierproxy dbproxy` and the shard router feed bytes in and write
bytes out. Modules: `errors` (PgProtocolError, SQLSTATEs), `framing` (FrontendFramer/BackendFramer:
boundaries and types only), `reader` (the bounded cursor), `messages` (decoded dataclasses and
decoders), `encode` (encoders), `auth` (SCRAM-SHA-256 client and server, md5).
"""

from .auth import *  # noqa: F403
from .auth import __all__ as _auth_all
from .encode import *  # noqa: F403
from .encode import __all__ as _encode_all
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .framing import *  # noqa: F403
from .framing import __all__ as _framing_all
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all
from .reader import *  # noqa: F403
from .reader import __all__ as _reader_all

__all__ = [*_auth_all, *_encode_all, *_errors_all, *_framing_all, *_messages_all, *_reader_all]
