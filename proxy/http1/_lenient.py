"""Legal request heads that llhttp's strict mode refuses, rewritten so that it takes them.

RFC 9110 8.6 lets a recipient take a Content-Length that repeats one decimal value (two field
lines, or a list such as ``5, 5``) as that value; llhttp refuses any second Content-Length and any
comma in one. RFC 9112 5 allows whitespace after a field value; llhttp takes a trailing space
after ``chunked`` but not a tab, and then refuses the request for not ending in chunked.

Only the error path comes here: when llhttp fails with one of `RECOVERABLE`, `RequestParser`
finds where the failing request began (`start_of_request`), `normalize` rewrites its head (one
Content-Length line with the one value; Transfer-Encoding values without trailing whitespace) and
a fresh llhttp parses it again, strictly. Differing values, invalid ones and every other shape are
left as they are, so llhttp refuses them again: nothing is accepted that the strict parser would
not accept in the normalized form, and the backend only ever sees that form.

One case stays refused (400, as before): such a head pipelined in the same read as the end of a
chunked body that began in an earlier read. llhttp does not say where that body's framing ended,
and it cannot be worked out from the decoded sizes, so the head's start is unknown.
"""

from __future__ import annotations

import httptools

__all__: list[str] = []

# At most this many requests are rewritten per `feed`: each costs a copy of the rest of the input,
# and no client pipelines more such requests in one read; beyond it, llhttp's refusal stands.
MAX_REWRITES_PER_FEED = 16

# llhttp's messages (after our "malformed request: " prefix) for the shapes `normalize` fixes.
RECOVERABLE = frozenset(
    {
        "malformed request: Duplicate Content-Length",
        "malformed request: Invalid character in Content-Length",
        "malformed request: Request has invalid `Transfer-Encoding`",
    }
)


class _Count:
    """httptools callbacks that only count complete requests."""

    __slots__ = ("n", "on_message_complete")

    def __init__(self) -> None:
        self.n = 0
        self.on_message_complete = self._done

    def _done(self) -> None:
        self.n += 1


def _complete_requests(data: memoryview) -> int:
    """How many requests llhttp completes in `data`; a parse error counts as past them all."""
    count = _Count()
    try:
        httptools.HttpRequestParser(count).feed_data(data)
    except httptools.HttpParserError:
        return 1 << 62
    return count.n


def start_of_request(data: bytes, before: int) -> int:
    """Offset in `data` (which starts at a message boundary) where the request after the first
    `before` complete ones begins: the shortest prefix llhttp completes `before` requests in.
    Found by doubling, then halving, the prefix: O(k log k) for an offset k, whatever follows."""
    if before == 0:
        return 0
    view = memoryview(data)
    lo, hi = 0, 256
    while hi < len(data) and _complete_requests(view[:hi]) < before:
        lo, hi = hi, hi * 2
    hi = min(hi, len(data))
    while lo < hi:
        mid = (lo + hi) // 2
        if _complete_requests(view[:mid]) >= before:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _content_length(value: bytes) -> int | None:
    """The one decimal value of a Content-Length field value, or None (invalid or differing)."""
    result = None
    for item in value.split(b","):
        item = item.strip(b" \t")
        if not item.isdigit():
            return None
        n = int(item)
        if result is not None and n != result:
            return None
        result = n
    return result


def normalize(data: bytes) -> bytes | None:
    """`data`, a request from its first byte (its head maybe still incomplete) and whatever
    follows it, with its head's complete Content-Length lines made one line with the one value
    and its Transfer-Encoding values without trailing whitespace. None when Content-Length values
    are invalid or differ (then llhttp's refusal stands)."""
    data = data.lstrip(b"\r\n")  # empty lines llhttp skipped before the request line
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[: end + 2], data[end + 2 :])
    lines = head.split(b"\r\n")
    out = []
    length: int | None = None
    for i, line in enumerate(lines[:-1]):  # the last is "" or a line still incomplete: as it is
        name, colon, value = line.partition(b":")
        lname = name.lower() if colon and i else b""
        if lname == b"content-length":
            n = _content_length(value)
            if n is None or (length is not None and n != length):
                return None
            if length is not None:
                continue  # the same value again: dropped
            length = n
            out.append(b"%s: %d" % (name, n) if b"," in value else line)
        elif lname == b"transfer-encoding":
            out.append(line.rstrip(b" \t"))
        else:
            out.append(line)
    out.append(lines[-1])
    return b"\r\n".join(out) + rest
