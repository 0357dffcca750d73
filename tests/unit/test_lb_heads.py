"""The backend's request head for the parser's simple path (proxy/lb/clientcore.py, `SimpleHeads`):
compiled, written straight into a bytes of its size (clientcore.pxd, `_write_simple`); pure, the
`%`-formatting it replaced. Checked against a head put together here by hand from the request's
parts, the compiled twin against the pure one (skipped where the module is not compiled), and in a
whole exchange: request IDs shared with the full path's heads, and a subclass's `upstream_head`
(lb/frontconn.py's ForwardingFrontend) still called."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.http1._simple import simple_request
from proxy.lb.client import ClientConn
from proxy.lb.clientcore import SimpleHeads
from proxy.lb.config import LbConfig
from proxy.lb.frontconn import ForwardingFrontend
from proxy.lb.frontend import Frontend
from proxy.lb.pool import Pool
from proxy.upstream.conn import UpstreamConn
from tests.unit.test_lb_clientcore import Sink
from tests.unit.test_native_differential import _twins

_TARGET = st.text("abcdefghijklmnopqrstuvwxyz0123456789/?=&%-._~", max_size=40).map(lambda t: "/" + t)
_HOST = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?(:[0-9]{1,5})?", fullmatch=True)
_FIELD = st.tuples(st.sampled_from(["User-Agent", "Accept", "Cookie", "X-Thing", "Accept-Language"]),
                   st.text("abcdefghijklmnopqrstuvwxyz0123456789 =;,/*.", max_size=30).map(str.strip))
_RID = st.one_of(st.integers(0, 300), st.integers(0, 2**63), st.just(2**64 - 2))


def _request(method: str, target: str, host: str, fields: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"Host: {host}"] + [f"{k}: {v}" for k, v in fields]
    if keep_alive:
        lines.insert(1, "Connection: keep-alive")
    return f"{method} {target} HTTP/1.1\r\n{''.join(line + chr(13) + chr(10) for line in lines)}\r\n".encode()


def _by_hand(method, target, host, fields, client_ip, scheme, prefix, rid) -> bytes:
    """What a backend must get: the request line, the client's lines less Connection, ours."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
    ours = (f"x-forwarded-for: {client_ip}\r\nx-forwarded-proto: {scheme}\r\nx-forwarded-host: {host}\r\n"
            f"x-request-id: {prefix}-{format(rid, 'x')}\r\n\r\n")  # fmt: skip
    return (head + ours).encode()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["GET", "HEAD"]), _TARGET, _HOST, st.lists(_FIELD, max_size=4), st.booleans(),
       st.sampled_from(["10.0.0.7", "::1", "2001:db8::17"]), st.sampled_from(["http", "https"]),
       st.sampled_from(["0a1b2c3d", "ffffffff"]), _RID)  # fmt: skip
def test_the_simple_head_is_the_request_less_connection_plus_ours(method, target, host, fields, keep_alive,
                                                                 client_ip, scheme, prefix, rid):  # fmt: skip
    head = simple_request(_request(method, target, host, fields, keep_alive), 65536)
    assume(head is not None and head.raw_fields is not None)
    heads = SimpleHeads(scheme.encode(), prefix.encode())
    heads.rid = rid
    got = heads.simple(head, client_ip.encode())
    assert got == _by_hand(method, target, host, fields, client_ip, scheme, prefix, rid + 1)
    assert heads.rid == rid + 1


@settings(max_examples=100, deadline=None)
@given(_TARGET, _HOST, st.lists(_FIELD, max_size=3), _RID, st.booleans())
def test_compiled_and_pure_heads_agree(target, host, fields, rid, pure_head):
    compiled, pure = _twins("proxy.lb.clientcore")
    data = _request("GET", target, host, fields, False)
    # The compiled SimpleHeads given the pure twin's RequestHead formats it as the pure one does.
    head = (_native_pure_simple() if pure_head else simple_request)(data, 65536)
    assume(head is not None)
    a, b = compiled.SimpleHeads(b"http", b"00c0ffee"), pure.SimpleHeads(b"http", b"00c0ffee")
    a.rid = b.rid = rid
    assert a.simple(head, b"10.1.2.3") == b.simple(head, b"10.1.2.3")
    assert a.rid == b.rid
    full = head.replace(raw_fields=None, headers=head.fields())
    assert a.simple(full, b"10.1.2.3") is None and b.simple(full, b"10.1.2.3") is None


def _native_pure_simple():
    from proxy import _native

    return _native.load_pure("proxy.http1._simple").simple_request


@pytest.fixture
def exchange():
    loop = asyncio.new_event_loop()
    cfg = LbConfig.model_validate({"pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}}})

    async def build(fe_class):
        pool = Pool("p", cfg.pools["p"], lambda b: None, lambda b: None)
        fe = fe_class(cfg, {"p": pool})
        client = ClientConn(fe)
        client.connection_made(Sink())
        backend = next(iter(pool.backends.values()))
        up = UpstreamConn(backend, cfg.limits.max_header_bytes)
        up_sink = Sink()
        up.connection_made(up_sink)
        backend.idle.append(up)
        return fe, client, up, up_sink

    yield lambda fe_class=Frontend: loop.run_until_complete(build(fe_class))
    loop.close()


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


def _sent(client, up, up_sink, request: bytes) -> bytes:
    up_sink.data.clear()
    client.data_received(request)
    up.data_received(RESPONSE)
    assert client.req is None, "the exchange did not end"
    return bytes(up_sink.data)


def test_request_ids_count_across_the_simple_and_the_full_path(exchange):
    fe, client, up, up_sink = exchange()
    prefix = fe.heads.rid_prefix
    simple = _sent(client, up, up_sink, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    # A Content-Length: 0 line takes the full parser's path (Frontend.upstream_head's second case).
    full = _sent(client, up, up_sink, b"GET /b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    again = _sent(client, up, up_sink, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    assert simple == (b"GET /a HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n"
                      b"x-forwarded-host: h\r\nx-request-id: " + prefix + b"-1\r\n\r\n")  # fmt: skip
    assert b"\r\nx-request-id: " + prefix + b"-2\r\n" in full
    assert again.endswith(b"x-request-id: " + prefix + b"-3\r\n\r\n")


def test_a_frontend_that_adds_to_the_head_is_still_asked(exchange):
    fe, client, up, up_sink = exchange(ForwardingFrontend)
    sent = _sent(client, up, up_sink, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert sent.endswith(b"x-request-id: " + fe.heads.rid_prefix + b"-1\r\nforwarded: for=10.0.0.7;proto=http;host=\"h\"\r\n\r\n")
