"""A tiny keep-alive HTTP backend for when nginx is not installed: `python -m bench.backend PORT`.

The benchmark's backends are nginx (`return 200 "ok\\n"`) because nginx is never the bottleneck.
Without nginx, this stands in so the scenario still runs: it answers every request head with the
same fixed 200 response and keeps the connection open (with --realistic: the response of
bench/realistic.py's file for the request's path, heads and sizes varying). It only supports bodiless requests (the
benchmark sends GETs) and counts request heads by their blank line, which also handles pipelining.
It is a Python process sharing the 2 cores, so results taken with it understate every proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

from bench import realistic

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: bench-backend\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)
# A client that sends this much without a blank line is not speaking to us in good faith.
MAX_HEAD_BYTES = 65536


class TinyHttp(asyncio.Protocol):
    __slots__ = ("_buf", "_transport", "_realistic")

    def __init__(self, realistic: bool = False) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._realistic = realistic  # answer by path with bench/realistic.py's files

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buf = self._buf + data
        if self._realistic:
            *heads, buf = buf.split(b"\r\n\r\n")
            if heads:
                self._transport.write(b"".join(realistic.response_for(h.split(b" ", 2)[1]) for h in heads))
        else:
            heads = buf.count(b"\r\n\r\n")
            if heads:
                self._transport.write(RESPONSE * heads)
                buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        if len(buf) > MAX_HEAD_BYTES:
            self._transport.close()
        self._buf = buf


async def serve(host: str, port: int, realistic: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await loop.create_server(lambda: TinyHttp(realistic), host, port, backlog=1024)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--realistic", action="store_true", help="answer by path with bench/realistic.py's files")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.realistic))
    else:
        uvloop.run(serve(args.host, args.port, args.realistic))


if __name__ == "__main__":
    main()
