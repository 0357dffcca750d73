"""Sans-IO HTTP/1.1 codec: parsers (bytes -> events), writers (heads -> bytes), header helpers.

No sockets and no asyncio here; the load balancer's protocols feed bytes in and write bytes out.
"""

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .headers import *  # noqa: F403
from .headers import __all__ as _headers_all
from .parser import *  # noqa: F403
from .parser import __all__ as _parser_all
from .writer import *  # noqa: F403
from .writer import __all__ as _writer_all

__all__ = [*_errors_all, *_events_all, *_headers_all, *_parser_all, *_writer_all]
