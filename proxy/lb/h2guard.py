"""Guards for HTTP/2 clients that the `h2` state machine does not bound itself, sans-IO.

* `FrameScanner` reads frame headers off the client's byte stream (after the connection preface)
  before `h2` sees the bytes, and refuses a header block that goes on too long: a HEADERS frame
  without END_HEADERS followed by CONTINUATION frames (the "CONTINUATION flood", 2024) is cut once
  its frames carry more than `max_block` bytes or number more than `max_frames`, before anything
  is decoded or held for it. It also catches the one frame-level check the `h2` library gets
  wrong: a SETTINGS ACK with a payload is a FRAME_SIZE_ERROR (RFC 9113 6.5), not PROTOCOL_ERROR.
  `error_code` says which HTTP/2 error code the connection is cut with.
* `ResetBudget` counts streams the client cancels (RST_STREAM) as a token bucket: a client that
  keeps opening and resetting streams (rapid reset, CVE-2023-44487) runs out and its connection is
  closed with ENHANCE_YOUR_CALM. Every reset stream's backend work is cancelled at once anyway.

Sizes: RFC 9113 4.1 (9-byte frame header: 24-bit length, type, flags, 31-bit stream id).
"""

from __future__ import annotations

__all__ = ["PREFACE", "FrameScanner", "ResetBudget"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _SETTINGS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x4, 0x5, 0x9
_END_HEADERS = 0x4
_ACK = 0x1
FRAME_SIZE_ERROR, ENHANCE_YOUR_CALM = 0x6, 0xB


class FrameScanner:
    """Feed the client's bytes; `feed` returns None, or why the connection must be cut."""

    __slots__ = ("_buf", "_skip", "_preface", "_in_block", "_block_bytes", "_block_frames",
                 "max_block", "max_frames", "error_code")  # fmt: skip

    def __init__(self, max_block: int, max_frames: int = 32) -> None:
        self._buf = b""  # an incomplete frame header
        self._skip = 0  # payload bytes of the current frame still to pass
        self._preface = len(PREFACE)  # preface bytes still to pass (h2 checks their value)
        self._in_block = False
        self._block_bytes = 0
        self._block_frames = 0
        self.max_block = max_block
        self.max_frames = max_frames
        self.error_code = ENHANCE_YOUR_CALM  # of the last refusal

    def feed(self, data: bytes) -> str | None:
        i, n = 0, len(data)
        if self._preface:
            take = min(self._preface, n)
            self._preface -= take
            i = take
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            need = 9 - len(self._buf)
            self._buf += data[i:i + need]
            i += need
            if len(self._buf) < 9:
                return None
            head, self._buf = self._buf, b""
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            self._skip = length
            if ftype == _SETTINGS and flags & _ACK and length:
                self.error_code = FRAME_SIZE_ERROR
                return "SETTINGS ACK with a payload"
            if ftype in (_HEADERS, _PUSH_PROMISE) and not self._in_block:
                if not flags & _END_HEADERS:
                    self._in_block = True
                    self._block_bytes = length
                    self._block_frames = 1
            elif ftype == _CONTINUATION and self._in_block:
                self._block_bytes += length
                self._block_frames += 1
                if flags & _END_HEADERS:
                    self._in_block = False
            if self._in_block and (self._block_bytes > self.max_block or self._block_frames > self.max_frames):
                self.error_code = ENHANCE_YOUR_CALM
                return (f"header block of {self._block_frames} frames and {self._block_bytes} bytes "
                        "without END_HEADERS (CONTINUATION flood)")  # fmt: skip
        return None


class ResetBudget:
    """A token bucket of client stream resets: `capacity` at once, `per_second` refilled."""

    __slots__ = ("tokens", "capacity", "per_second", "_at")

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.tokens = capacity
        self.capacity = capacity
        self.per_second = per_second
        self._at = now

    def spend(self, now: float) -> bool:
        """One reset; False when the budget is exhausted."""
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.per_second)
        self._at = now
        self.tokens -= 1
        return self.tokens >= 0
