"""Differential tests of the compiled backend connection (proxy/upstream/conn.py, whose
`UpstreamCore` is an extension type when compiled: conn.pxd): hypothesis drives the compiled
`UpstreamConn` and its pure-Python twin (`proxy._native.load_pure`) through the same asyncio
callbacks and client-side calls, each with a client and a transport that record what they are
asked, and requires the same records, errors included, and the same state after every step. Skipped
where the module is not compiled (the pure pass)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.health import HealthState
from proxy.upstream.backend import Backend
from proxy.upstream.config import BackendConfig
from tests.unit.test_http1_fuzz import mutated, pieces, response_stream
from tests.unit.test_native_differential import _twins


class Recorder:
    """The transport and the client an UpstreamConn talks to: every call, in order."""

    def __init__(self, log: list, simple: bool) -> None:
        self.log = log
        self.simple = simple

    # transport
    def set_write_buffer_limits(self, high=None, low=None):
        self.log.append(("limits", high, low))

    def write(self, data):
        self.log.append(("write", bytes(data)))

    def pause_reading(self):
        self.log.append(("pause",))

    def resume_reading(self):
        self.log.append(("resume",))

    def close(self):
        self.log.append(("close",))

    def abort(self):
        self.log.append(("abort",))

    # client (the exchange)
    def takes_simple_response(self):
        self.log.append(("takes_simple?", self.simple))
        return self.simple

    def on_simple_response(self, up, data, result):
        self.log.append(("simple", bytes(data), result))

    def on_upstream_events(self, up, events):
        self.log.append(("events", list(events)))

    def upstream_protocol_error(self, up, exc):
        self.log.append(("protocol_error", str(exc), exc.status_hint))

    def upstream_closed_early(self, up, exc):
        self.log.append(("closed_early", str(exc)))

    def upstream_lost(self, up, exc):
        self.log.append(("lost", repr(exc)))

    def pause_reading_for_upstream(self):
        self.log.append(("pause_for_upstream",))

    def resume_reading_for_upstream(self):
        self.log.append(("resume_for_upstream",))


STEPS = st.lists(st.one_of(
    st.tuples(st.just("data"), st.integers(0, 7)),
    st.sampled_from([("attach",), ("detach",), ("eof",), ("lost",), ("pause_writing",), ("resume_writing",),
                     ("pause_reading",), ("resume_reading",), ("write",), ("close",), ("abort",)]),
), max_size=14)  # fmt: skip


def state(up) -> tuple:
    return (up.client is not None, up.reused, up.got_bytes, up.closed, up.read_paused, up.private,
            up.idle_since, up.max_header_bytes, up.parser.in_message, up.backend.open_connections,
            len(up.backend.idle))  # fmt: skip


def run(mod, methods: list[bytes], chunks: list[bytes], steps: list, simple: bool) -> list:
    log: list = []
    backend = Backend("p", BackendConfig(name="b", address="127.0.0.1:1"), HealthState(rise=1, fall=1))
    rec = Recorder(log, simple)
    up = mod.UpstreamConn(backend, 8192)
    up.connection_made(rec)
    chunks = list(chunks)
    for step in [("attach",)] + list(steps) + [("data", i) for i in range(len(chunks))]:
        try:
            kind = step[0]
            if kind == "attach":
                up.client = rec
                up.reused = True
                up.got_bytes = False
                for m in methods:
                    up.parser.expect(m)
            elif kind == "data":
                if chunks:
                    up.data_received(chunks.pop(0))
            elif kind == "eof":
                log.append(("eof ->", up.eof_received()))
            elif kind == "lost":
                if not up.closed:
                    up.connection_lost(None)
            elif kind == "write":
                up.write(b"body")
            else:
                getattr(up, kind)()
        except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
            log.append(("raised", type(exc).__name__, str(exc)))
        log.append(state(up))
    return log


def same(methods, chunks, steps, simple) -> None:
    compiled, pure = _twins("proxy.upstream.conn")
    assert run(compiled, methods, chunks, steps, simple) == run(pure, methods, chunks, steps, simple)


@settings(max_examples=200, deadline=None)
@given(response_stream(), st.lists(st.integers(0, 10_000), max_size=5), STEPS, st.booleans())
def test_responses_and_callbacks_compiled_is_pure(stream, cuts, steps, simple):
    methods, wire, _ = stream
    same(methods, pieces(wire, cuts), steps, simple)
    same(methods, [wire], [], simple)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.lists(st.integers(0, 10_000), max_size=5), STEPS, st.booleans())
def test_mutated_responses_compiled_is_pure(data, cuts, steps, simple):
    methods, wire, _ = data.draw(response_stream())
    same(methods, pieces(data.draw(mutated(wire)), cuts), steps, simple)


def test_an_idle_connection_that_hears_from_its_backend_closes_in_both():
    compiled, pure = _twins("proxy.upstream.conn")
    for mod in (compiled, pure):
        log: list = []
        backend = Backend("p", BackendConfig(name="b", address="127.0.0.1:1"), HealthState(rise=1, fall=1))
        up = mod.UpstreamConn(backend, 8192)
        up.connection_made(Recorder(log, True))
        backend.idle.append(up)
        up.data_received(b"HTTP/1.1 200 OK\r\n")
        up.connection_lost(None)
        assert log == [("limits", 256 * 1024, None), ("close",)] and not backend.idle and up.closed
