"""The lb client connection's hot half (proxy/lb/clientcore.py), in process: a simple exchange from
the client's bytes to the backend's and back, keep-alive reuse, the subclass overrides lb/frontconn.py
relies on, and the state read and set from Python. Runs against whichever twin is imported: the
extension type in the compiled pass, the plain class with TIERPROXY_PURE=1 (scripts/dev.sh)."""

from __future__ import annotations

import asyncio

import pytest

from proxy import _native
from proxy.lb.client import ClientConn, Phase
from proxy.lb.config import LbConfig
from proxy.lb.frontend import Frontend
from proxy.lb.pool import Pool
from proxy.upstream.conn import UpstreamConn

REQUEST = (b"GET /items?page=%d HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: test/1.0\r\n"
           b"Connection: keep-alive\r\n\r\n")  # fmt: skip
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
            b"ETag: \"%d\"\r\n\r\nhello")  # fmt: skip


class Sink:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("10.0.0.7", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


@pytest.fixture
def setup():
    loop = asyncio.new_event_loop()
    cfg = LbConfig.model_validate({"pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}}})

    async def build(cls: type[ClientConn]):
        pool = Pool("p", cfg.pools["p"], lambda b: None, lambda b: None)
        fe = Frontend(cfg, {"p": pool})
        client = cls(fe)
        client_sink = Sink()
        client.connection_made(client_sink)
        backend = next(iter(pool.backends.values()))
        up = UpstreamConn(backend, cfg.limits.max_header_bytes)
        up_sink = Sink()
        up.connection_made(up_sink)
        backend.idle.append(up)
        return client, client_sink, backend, up, up_sink

    yield lambda cls=ClientConn: loop.run_until_complete(build(cls))
    loop.close()


def test_a_simple_exchange_relays_both_ways_and_leaves_the_connection_idle(setup):
    client, client_sink, backend, up, up_sink = setup()
    for i in range(3):
        client.data_received(REQUEST % i)
        assert client.phase == Phase.BACKEND and client.up is up and up.client is client
        head = bytes(up_sink.data)
        up_sink.data.clear()
        assert head.startswith(b"GET /items?page=%d HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: test/1.0\r\n" % i)
        assert b"connection" not in head.lower() and b"\r\nx-forwarded-for: 10.0.0.7\r\n" in head
        up.data_received(RESPONSE % i)
        # Relayed as it came, less the Connection line.
        assert bytes(client_sink.data) == b'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nETag: "%d"\r\n\r\nhello' % i
        client_sink.data.clear()
        assert client.req is None and client.backend is None and client.up is None and client.resp is None
        assert client.phase == Phase.IDLE and not client.closed and up.client is None
        assert list(backend.idle) == [up] and backend.inflight == 0
    assert backend.requests == 3 and backend.responses == [0, 3, 0, 0, 0]
    assert client.fe.requests_total == 3


def test_overrides_of_the_hot_methods_are_called(setup):
    calls = []

    class Marked(ClientConn):
        def _start_request(self, head):  # as lb/frontconn.py's RedirectConn
            calls.append(("start", head.target))
            super()._start_request(head)

        def on_simple_response(self, up, data, result):  # as HstsConn
            calls.append(("response", result[0]))
            super().on_simple_response(up, data, result)

    client, client_sink, _backend, up, _up_sink = setup(Marked)
    client.data_received(REQUEST % 7)
    up.data_received(RESPONSE % 7)
    assert calls == [("start", b"/items?page=7"), ("response", 200)]
    assert client_sink.data.endswith(b"hello") and client.req is None


def test_the_state_is_read_and_set_from_python(setup):
    client, *_ = setup()
    client.deadline = 12.5
    client.phase = Phase.HEAD
    client.xfer += 10
    client.close_after = True
    assert (client.deadline, client.phase, client.xfer, client.close_after) == (12.5, Phase.HEAD, 10, True)
    assert client.client_ip == b"10.0.0.7" and client.pending == [] and client.retry_buf is None


@pytest.mark.skipif(_native.pure_requested(), reason="the pure pass")
def test_compiled_the_state_is_an_extension_types_and_no_instance_dict(setup):
    if _native.status()["modules"]["proxy.lb.clientcore"] != "compiled":
        pytest.skip("no native build of proxy.lb.clientcore here")
    client, *_ = setup()
    assert not hasattr(client, "__dict__")
    with pytest.raises(AttributeError):
        client.no_such_field = 1  # type: ignore[attr-defined]


def test_a_reloads_timeouts_and_limits_reach_the_exchange(setup):
    """The exchange reads the frontend's per-request values (FrontendCore), which set_config renews."""
    client, client_sink, backend, up, up_sink = setup()
    fe = client.fe
    fe.set_config(LbConfig.model_validate({
        "pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}},
        "timeouts": {"backend_response": 5.5, "client_idle": 7.25}, "limits": {"max_idle_per_backend": 0}}))
    client.data_received(REQUEST % 1)
    assert client.deadline == fe.now + 5.5
    up.data_received(RESPONSE % 1)
    assert client.req is None and client.deadline == fe.now + 7.25
    # No idle connection may be kept now: the backend connection was closed, not pooled.
    assert list(backend.idle) == [] and up_sink.closed


@pytest.mark.skipif(_native.pure_requested(), reason="the pure pass")
def test_compiled_the_frontends_hot_fields_are_slots_for_python(setup):
    if _native.status()["modules"]["proxy.lb.clientcore"] != "compiled":
        pytest.skip("no native build of proxy.lb.clientcore here")
    from proxy.lb.clientcore import ClientCore, FrontendCore

    client, *_ = setup()
    assert isinstance(client.fe, FrontendCore)
    # Interpreted readers keep CPython's specialised slot loads (proxy/_members.pxd) of the object
    # fields; the counter and the timeouts are typed C fields, set and read from Python all the same.
    for cls, names in ((FrontendCore, ("now", "pools", "routes", "timeouts")),
                       (ClientCore, ("fe", "req", "backend", "up"))):
        assert all(type(cls.__dict__[n]).__name__ == "member_descriptor" for n in names)
    client.fe.requests_total = 41
    client.fe.requests_total += 1
    assert client.fe.requests_total == 42
