"""proxy.core.accept: a burst of connections is taken in one go, however busy the loop is."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from proxy.core.accept import Acceptor, listen_sockets


class _Conn(asyncio.Protocol):
    def __init__(self, made: list[int], iteration: list[int]) -> None:
        self.made, self.iteration = made, iteration

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.iteration[0])
        transport.write(b"hi")


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_burst_of_connections_is_accepted_within_a_few_loop_iterations(loop_kind):
    # uvloop's create_server takes about one connection per iteration: 300 queued clients would
    # need ~300 iterations. The acceptor must take them within a handful.
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        made: list[int] = []
        iteration = [0]
        (sock,) = listen_sockets("127.0.0.1", 0)
        acceptor = Acceptor(loop, sock, lambda: _Conn(made, iteration))
        port = acceptor.address[1]
        clients = []
        for _ in range(300):  # queued in the kernel before the loop looks at the socket
            c = socket.create_connection(("127.0.0.1", port))
            clients.append(c)
        acceptor.start()

        def tick() -> None:
            iteration[0] += 1
            if len(made) < 300 and iteration[0] < 2000:
                loop.call_soon(tick)

        loop.call_soon(tick)
        while len(made) < 300 and iteration[0] < 2000:
            await asyncio.sleep(0)
        for c in clients:
            c.settimeout(5)
            assert c.recv(2) == b"hi"  # a real transport, writing
            c.close()
        acceptor.close()
        return made, iteration[0]

    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run
    made, _ = runner(main())
    assert len(made) == 300
    assert max(made) <= 10, f"the last connection came {max(made)} iterations in"


def test_listen_sockets_share_a_port_with_reuse_port_and_close_frees_it():
    a = listen_sockets("127.0.0.1", 0, reuse_port=True)
    port = a[0].getsockname()[1]
    b = listen_sockets("127.0.0.1", port, reuse_port=True)  # a second worker on the same port
    with pytest.raises(OSError):
        listen_sockets("127.0.0.1", port)  # without SO_REUSEPORT: in use
    for s in a + b:
        s.close()

    async def main() -> None:
        (sock,) = listen_sockets("127.0.0.1", 0)
        acceptor = Acceptor(asyncio.get_running_loop(), sock, asyncio.Protocol)
        acceptor.start()
        port = acceptor.address[1]
        acceptor.close()
        acceptor.close()  # twice is harmless
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)

    uvloop.run(main())
