"""A response body being filled from the origin while clients read it: `Fill` keeps the chunks that
have arrived, each `FillReader` (one per client) walks them and waits for more, so a second client
asking for an object being fetched gets the bytes already in at once and the rest as they arrive,
not after the fill.

While a fill may still be stored (`keep` True: its size is within the store's per-object limit)
every chunk is kept, for late readers and for the store. When it grows past the limit it is no
longer kept: no new reader may join, and chunks every current reader has passed are dropped, so
memory stays bounded by what the slowest reader has not read yet; the pump that feeds the fill
(engine.py) waits in `room()` until that is below `HIGH_WATER` (the origin connection is then
paused by backpressure, origin.py).

Pure asyncio state, no sockets; one event loop owns it.
"""

from __future__ import annotations

import asyncio

__all__ = ["Fill", "FillReader", "HIGH_WATER"]

HIGH_WATER = 1024 * 1024  # bytes not yet read by the slowest reader of an unkept fill, before the pump waits


class Fill:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keep = True
        self.chunks: list[bytes] = []
        self.base = 0  # index (among all chunks ever fed) of chunks[0]; > 0 once unkept chunks were dropped
        self.size = 0  # bytes fed so far
        self.done = False
        self.error: BaseException | None = None
        self.readers: set[FillReader] = set()
        self._changed: asyncio.Future[None] | None = None
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- the pump's side ---------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.keep and self.size > self.limit:
            self.keep = False
        if not self.keep:
            self._trim()
        self._wake()

    def finish(self) -> None:
        self.done = True
        if not self._finished.done():
            self._finished.set_result(None)
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done = True
        if not self._finished.done():
            self._finished.set_exception(exc)
            self._finished.exception()  # retrieved: nobody may be waiting
        self._wake()

    def body(self) -> bytes:
        """The whole body of a finished, kept fill."""
        assert self.done and self.keep and self.base == 0
        return b"".join(self.chunks)

    def unread(self) -> int:
        """Bytes the slowest reader has not read yet (all of them with no reader)."""
        if not self.readers:
            return 0
        first = min(r.pos for r in self.readers) - self.base
        return sum(len(c) for c in self.chunks[first:])

    async def room(self) -> None:
        """Wait while an unkept fill's slowest reader is more than HIGH_WATER behind."""
        while not self.keep and self.readers and self.unread() > HIGH_WATER:
            await self._wait()

    # -- readers -----------------------------------------------------------------------------

    def can_join(self) -> bool:
        return self.base == 0 and self.error is None

    def reader(self) -> FillReader:
        assert self.can_join()
        r = FillReader(self)
        self.readers.add(r)
        return r

    async def finished(self) -> None:
        """Wait until the whole body is in (raises the fill's error)."""
        await asyncio.shield(self._finished)

    # -- internals ---------------------------------------------------------------------------

    def _trim(self) -> None:
        low = min((r.pos for r in self.readers), default=self.base + len(self.chunks))
        drop = low - self.base
        if drop > 0:
            del self.chunks[:drop]
            self.base = low

    def _wake(self) -> None:
        fut, self._changed = self._changed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)


class FillReader:
    """One client's walk over a fill: `next_chunk()` gives each chunk once, b"" at the end."""

    def __init__(self, fill: Fill) -> None:
        self.fill = fill
        self.pos = 0

    async def next_chunk(self) -> bytes:
        fill = self.fill
        while self.pos >= fill.base + len(fill.chunks):
            if fill.error is not None:
                raise fill.error
            if fill.done:
                return b""
            await fill._wait()
        chunk = fill.chunks[self.pos - fill.base]
        self.pos += 1
        if not fill.keep:
            fill._trim()
            fill._wake()  # the pump may be waiting for room
        return chunk

    def close(self) -> None:
        fill = self.fill
        if self in fill.readers:
            fill.readers.discard(self)
            if not fill.keep:
                fill._trim()
            fill._wake()
