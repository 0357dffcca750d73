"""What a real `tierproxy lb` process does with requests real clients send that are unusual but
legal, or legal and then broken: pipelined requests before a bad one, Proxy-Authorization,
repeated identical Content-Length, whitespace after "chunked", and how refusals are logged.

Raw sockets on the client side, a recording backend (its own strict parser) on the other: the
test compares what the client meant with the responses it got and the requests the backend saw.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from proxy.devstack.poll import wait_until
from tests.integration.hardening_util import NO_HEALTH_NO_OUTLIER, parse_stream, raw_exchange
from tests.integration.lbproc import LbProcess, http_json
from tests.integration.recording_backend import RecordingBackend

H = b"Host: x\r\n"


class Setup:
    def __init__(self, lb: LbProcess, rec: RecordingBackend) -> None:
        self.lb = lb
        self.rec = rec

    def managed_processes(self) -> list[LbProcess]:
        return [self.lb]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    rec = RecordingBackend("rec")
    lb = LbProcess(
        tmp_path_factory.mktemp("lbreq"),
        "[timeouts]\nclient_header = 1.0\nbackend_response = 30.0\n"
        "[pools.web]\nretries = 0\n" + NO_HEALTH_NO_OUTLIER
        + f'[[pools.web.backends]]\nname = "rec"\naddress = "{rec.address}"\n',
        name="lbreq",
    )
    lb.start()
    try:
        yield Setup(lb, rec)
    finally:
        lb.stop()
        rec.close()


def _seen(setup: Setup, before: int, n: int) -> list:
    return setup.rec.wait_count(before + n)[before:]


# -- 1. pipelined requests before a bad one ------------------------------------------------------

GOOD = (
    b"GET /p1 HTTP/1.1\r\n" + H + b"\r\n"
    + b"POST /p2 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
    + b"GET /p3 HTTP/1.1\r\n" + H + b"Accept: */*\r\n\r\n"
)
BAD = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /smuggle HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /v HTTP/7.0\r\n" + H + b"\r\n", 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
]


@pytest.mark.parametrize("bad,status", BAD, ids=["garbage", "cl-te", "version", "tls"])
@pytest.mark.parametrize("split", ["one-read", "bad-apart", "every-100-bytes"])
def test_pipelined_requests_before_a_bad_one_are_answered_in_order_then_the_error(
    setup: Setup, bad: bytes, status: int, split: str
) -> None:
    before = setup.rec.count()
    wire = GOOD + bad
    if split == "one-read":
        pieces = [wire]
    elif split == "bad-apart":
        pieces = [GOOD, bad]
    else:
        pieces = [wire[i : i + 100] for i in range(0, len(wire), 100)]
    out = raw_exchange(setup.lb.port, pieces)
    rs = parse_stream(out, ["GET", "POST", "GET"])
    assert [r.status for r in rs] == [200, 200, 200, status], out
    assert rs[-1].headers.get("connection") == "close"
    seen = _seen(setup, before, 3)
    assert [(r.method, r.target, r.body) for r in seen] == [(b"GET", b"/p1", b""), (b"POST", b"/p2", b"hello"), (b"GET", b"/p3", b"")]
    # each response answers its own request, in order
    assert [int(r.headers["x-req-index"]) for r in rs[:3]] == [r.index for r in seen]
    assert setup.rec.count() == before + 3  # nothing from the bad bytes on


# -- 2. Proxy-Authorization -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        # a simple GET (the parser's simple path: field lines forwarded as they came)
        b"GET /pa HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n",
        # the full path: a body, a Connection header, Proxy-Connection (hop-by-hop: removed)
        b"POST /pa HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /pa HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nproxy-authorization:Basic dXNlcjpwYXNz \r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
    ],
    ids=["simple", "full", "chunked"],
)
def test_proxy_authorization_reaches_the_backend(setup: Setup, request_bytes: bytes) -> None:
    before = setup.rec.count()
    out = raw_exchange(setup.lb.port, request_bytes)
    assert [r.status for r in parse_stream(out, [request_bytes.split(b" ")[0].decode()])] == [200], out
    (r,) = _seen(setup, before, 1)
    assert r.header_all(b"proxy-authorization") == [b"Basic dXNlcjpwYXNz"], r.raw
    assert r.header(b"proxy-connection") is None, r.raw


def test_proxy_authorization_named_in_connection_is_removed(setup: Setup) -> None:
    before = setup.rec.count()
    out = raw_exchange(setup.lb.port, b"GET /pa HTTP/1.1\r\nHost: x\r\nConnection: Proxy-Authorization\r\n"
                                      b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n")  # fmt: skip
    assert [r.status for r in parse_stream(out)] == [200], out
    (r,) = _seen(setup, before, 1)
    assert r.header(b"proxy-authorization") is None, r.raw


# -- 7. legal framing llhttp refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes,body",
    [
        (b"POST /l HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"POST /l HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", b"hello"),
        (b"POST /l HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"POST /l HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ],
    ids=["two-lines", "list", "chunked-space", "chunked-tab"],
)
def test_repeated_content_length_and_whitespace_after_chunked_are_accepted(setup: Setup, request_bytes: bytes, body: bytes) -> None:
    before = setup.rec.count()
    # twice on one connection, the second split inside its head: both forwarded, one framing each
    wire = request_bytes + request_bytes
    cut = len(request_bytes) + request_bytes.index(b"\r\n\r\n") - 3
    out = raw_exchange(setup.lb.port, [wire[:cut], wire[cut:]])
    assert [r.status for r in parse_stream(out, ["POST", "POST"])] == [200, 200], out
    for r in _seen(setup, before, 2):
        assert r.body == body, r.raw
        assert len(r.header_all(b"content-length")) + len(r.header_all(b"transfer-encoding")) == 1, r.raw
        assert r.header_all(b"content-length") in ([], [b"5"]), r.raw


def test_differing_content_lengths_are_still_refused(setup: Setup) -> None:
    before = setup.rec.count()
    for cl in (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"Content-Length: 5, 6\r\n", b"Content-Length: 5, 5, x\r\n"):
        out = raw_exchange(setup.lb.port, b"POST /d HTTP/1.1\r\n" + H + cl + b"\r\nhello!")
        assert [r.status for r in parse_stream(out)] == [400], out
    assert setup.rec.count() == before


# -- 6. refusals are logged ----------------------------------------------------------------------


def _log_events(lb: LbProcess) -> list[dict]:
    out = []
    for line in lb.log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and str(rec.get("event", "")).startswith("request rejected"):
            out.append(rec)
    return out


def _client_errors_total(lb: LbProcess) -> int:
    code, text = http_json(lb.admin("/metrics"))
    assert code == 200
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("tierproxy_lb_client_errors_total{"))  # fmt: skip


def test_refusals_are_logged_with_reason_and_client_and_rate_limited(setup: Setup) -> None:
    lb = setup.lb
    # a 400 with its reason, and a 408 (a head that never ends)
    raw_exchange(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 408 ")

    def logged(pred) -> bool:
        return any(pred(e) for e in _log_events(lb))

    wait_until(lambda: logged(lambda e: e.get("status") == 400 and e.get("reason") == "more than one Host header"),
               10, "the 400 in the log")  # fmt: skip
    wait_until(lambda: logged(lambda e: e.get("status") == 408 and e.get("reason") == "request timeout"), 10, "the 408")
    assert all(e["client"] == "127.0.0.1" for e in _log_events(lb) if "status" in e)

    # a flood: at most so many lines a second, the rest counted in a summary line; every refusal
    # the metrics count is either logged or summed in a summary
    flood = [b"BAD%d\r\n\r\n" % i for i in range(150)]
    socks = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in flood]
    for s, data in zip(socks, flood):
        s.sendall(data)
    for s in socks:
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
        s.close()

    def accounted() -> bool:
        events = _log_events(lb)
        lines = sum(1 for e in events if "status" in e)
        left_out = sum(e["suppressed"] for e in events if "suppressed" in e)
        return lines + left_out == _client_errors_total(lb)

    wait_until(accounted, 15, "every refusal logged or summed")
    events = _log_events(lb)
    assert sum(e.get("suppressed", 0) for e in events) > 0, "150 refusals at once, none left out"
    # 20 lines per second of the balancer's (monotonic) clock: its seconds need not start where
    # the wall clock's do, so a wall-clock second may hold the end of one and the start of the
    # next, never more (10 ms for the time between its clock and the log record's).
    stamps = sorted(e["ts"] for e in events if "status" in e)
    for i in range(len(stamps) - 40):
        assert stamps[i + 40] - stamps[i] >= 0.99, stamps


# -- 1 again: the bad bytes come while an earlier request is at the backend (runs last: it releases
# the recording backend's held answers for good) ---------------------------------------------------


def test_bad_bytes_during_an_exchange_wait_for_its_response(setup: Setup) -> None:
    before = setup.rec.count()
    with socket.create_connection(("127.0.0.1", setup.lb.port), timeout=15) as s:
        s.sendall(b"GET /hold_answer HTTP/1.1\r\n" + H + b"\r\n")
        setup.rec.wait_count(before + 1)
        s.sendall(b"NOT HTTP\r\n\r\n")
        setup.rec.release_held()
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    rs = parse_stream(out)
    assert [r.status for r in rs] == [200, 400], out
    assert rs[0].body == b"req=%d" % before
