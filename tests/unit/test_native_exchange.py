"""The calls between the lb exchange's compiled halves (docs/perf.md, "The lb exchange, fourth
pass"): the backend connection calls its client's simple-response methods through the compiled
`UpstreamClient` base (proxy/upstream/conn.py) where the client is the lb's, and by name otherwise
(the cdn's origin fetch); Python overrides of them are still the ones called; the Connection line's
cut (`_cut`, one copy compiled) is `cut_connection`'s, whatever the bytes and bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1._simple import cut_connection
from proxy.lb.client import ClientConn
from proxy.lb.clientcore import ClientCore, _cut
from proxy.upstream.conn import UpstreamClient
from tests.unit.test_lb_clientcore import REQUEST, RESPONSE, setup  # noqa: F401  # the fixture


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(-90, 90), st.integers(-90, 90), st.sampled_from([bytes, bytearray]))
def test_the_cut_is_cut_connections(data, start, end, kind):
    assert _cut(kind(data), start, end) == cut_connection(kind(data), start, end)


def test_the_lb_exchange_is_an_upstream_client():
    assert issubclass(ClientConn, UpstreamClient) and issubclass(ClientCore, UpstreamClient)
    base = UpstreamClient()
    assert base.takes_simple_response() is False


def test_a_python_override_of_takes_simple_response_is_honoured(setup):  # noqa: F811
    calls = []

    class Full(ClientConn):
        def takes_simple_response(self):  # the full parser's path for every response
            calls.append("takes")
            return False

        def on_simple_response(self, up, data, result):
            calls.append("simple")  # never: takes_simple_response said no
            super().on_simple_response(up, data, result)

    client, client_sink, backend, up, _up_sink = setup(Full)
    client.data_received(REQUEST % 3)
    up.data_received(RESPONSE % 3)
    assert calls == ["takes"]
    # The full path relays the same response (its head rewritten by our writer) and ends the exchange.
    assert bytes(client_sink.data).endswith(b"hello") and b'etag: "3"' in bytes(client_sink.data).lower()
    assert client.req is None and up.client is None and list(backend.idle) == [up]


def test_a_client_that_is_no_upstream_client_is_called_by_name(setup):  # noqa: F811
    """The cdn's origin fetch does not derive from UpstreamClient: called by name, as before."""
    _client, _sink, backend, up, _up_sink = setup()
    calls = []

    class Fetch:
        def takes_simple_response(self):
            calls.append("takes")
            return True

        def on_simple_response(self, up_, data, result):
            calls.append(("simple", result[0], up_ is up, data == RESPONSE % 4))

    up.client = Fetch()
    up.parser.expect(b"GET")
    up.data_received(RESPONSE % 4)
    assert calls == ["takes", ("simple", 200, True, True)]
