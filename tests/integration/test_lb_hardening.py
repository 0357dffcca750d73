"""Adversarial tests of `tierproxy lb` that are not about parsing: slowloris and slow readers,
connection floods, and misbehaving backends (wrong lengths, garbage, early closes, hangs, 1xx and
101 games): clients get 502/504 or a cleanly truncated response, never another client's bytes."""

from __future__ import annotations

import http.client
import json
import resource
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import backends_toml
from tests.integration.hardening_util import (
    NO_HEALTH_NO_OUTLIER,
    lb_status,
    new_client,
    parse_stream,
    raw_exchange,
    rss_kib,
)
from tests.integration.lbproc import LbProcess, http_json, wait_for
from tests.integration.misbehaving_backend import MisbehavingBackend
from tests.integration.recording_backend import RecordingBackend

# -- slowloris and slow readers ----------------------------------------------------------------


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        pytest.skip(f"RLIMIT_NOFILE is {soft}, {needed} needed")


def _metric(lb: LbProcess, name: str) -> float:
    code, text = http_json(lb.admin("/metrics"))
    assert code == 200
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


# Long enough for any machine to open all the slow connections before the first one's head is due
# (the claim is 2000 held at once), short enough to wait for.
SLOWLORIS_HEADER_TIMEOUT = 10.0


def test_slowloris_2000_connections_get_408_while_others_are_served(web_worker_factory, lb_factory):
    n_slow = 2000
    # the test process holds 2000 sockets and the balancer (which inherits the limit) 2000 more
    _raise_nofile(2 * n_slow + 1000)
    w = web_worker_factory("sl")
    lb = lb_factory(
        f"[timeouts]\nclient_header = {SLOWLORIS_HEADER_TIMEOUT}\n[limits]\nmax_client_connections = 3000\n"
        '[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w])
    )
    slow: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        # Each starts its head at once, so each one's client_header runs from its own start,
        # however long opening the others takes.
        started = time.monotonic()
        for _ in range(n_slow):
            s = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
            s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        opening = time.monotonic() - started
        assert opening < SLOWLORIS_HEADER_TIMEOUT / 2, f"opening {n_slow} connections took {opening:.1f} s"
        # all of them are open at the balancer at once (none is due before the last one opened)
        wait_for(lambda: _metric(lb, "tierproxy_lb_client_connections") >= n_slow, 20, "2000 client connections")
        for s in slow:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        got: dict[socket.socket, bytes] = {}
        done: set[socket.socket] = set()
        normal_ok = 0
        open_at_first_answer = 0
        normal_client = new_client(lb.port)
        # every one is cut client_header after its start (plus the sweep and a loaded machine)
        deadline = started + opening + SLOWLORIS_HEADER_TIMEOUT + 45
        rounds = 0
        while len(done) < n_slow and time.monotonic() < deadline:
            rounds += 1
            # a normal client is served correctly while the slow ones are stuck in their heads
            if rounds <= 10 and len(done) < n_slow:
                r = normal_client.get("/whoami")
                assert r.status == 200 and json.loads(r.body)["instance"] == "sl", r
                if normal_ok == 0:
                    open_at_first_answer = n_slow - len(done)
                normal_ok += 1
                out = raw_exchange(lb.port, b"GET /bytes?n=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                (rb,) = parse_stream(out)
                assert rb.status == 200 and len(rb.body) == 1000
            # trickle one byte on each slow connection still open
            for s in slow:
                if s not in done:
                    try:
                        s.send(b"a")
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        pass  # reset: the read side will see it
            for key, _ in sel.select(timeout=0.3):
                s = key.fileobj  # type: ignore[assignment]
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    got[s] = got.get(s, b"") + data  # type: ignore[index]
                else:
                    done.add(s)  # type: ignore[arg-type]
                    sel.unregister(s)
        normal_client.close()
        assert normal_ok >= 1 and open_at_first_answer == n_slow
        assert len(done) == n_slow, f"{n_slow - len(done)} slow connections still open 45 s after their head was due"
        # each one read a 408 (or nothing: a plain close is acceptable), never anything else
        for s in slow:
            data = got.get(s, b"")
            if data:
                (r,) = parse_stream(data)
                assert r.status == 408, data
        assert sum(1 for s in slow if got.get(s)) > n_slow // 2  # most of them were told why
        # and the balancer still serves new clients
        out = raw_exchange(lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert [r.status for r in parse_stream(out)] == [200]
    finally:
        sel.close()
        for s in slow:
            s.close()


def test_silent_new_connection_is_closed_after_client_header(lb_factory):
    rec = RecordingBackend("silent")
    try:
        lb = lb_factory(
            "[timeouts]\nclient_header = 1.0\nclient_idle = 60\n" + NO_HEALTH_NO_OUTLIER
            + f'[[pools.web.backends]]\nname = "rec"\naddress = "{rec.address}"\n'
        )
        s = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        try:
            out = b""
            try:
                while chunk := s.recv(4096):
                    out += chunk
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            assert closed, "still open 5 s after connecting with client_header = 1.0"
            assert out == b"" or parse_stream(out)[0].status == 408
        finally:
            s.close()
    finally:
        rec.close()


def _start_non_reader(port: int, path: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def _drain_to_eof(s: socket.socket, limit: int, timeout: float) -> tuple[int, bool]:
    """Read until EOF (True) or `limit` bytes / `timeout` (False). Returns (bytes read, eof)."""
    total = 0
    end = time.monotonic() + timeout
    s.settimeout(2)
    while total < limit and time.monotonic() < end:
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return total, True
        if not data:
            return total, True
        total += len(data)
    return total, False


def test_slow_readers_keep_memory_bounded_and_are_cut(web_worker_factory, lb_factory):
    w = web_worker_factory("sr")
    lb = lb_factory(
        "[timeouts]\nbackend_response = 2.0\n[pools.web]\nretries = 0\n"
        + NO_HEALTH_NO_OUTLIER + backends_toml("web", [w])
    )
    size = 200_000_000
    assert lb.pid is not None
    base = rss_kib(lb.pid)
    readers = [_start_non_reader(lb.port, f"/bytes?n={size}") for _ in range(6)]
    try:
        peak = base
        # other clients are served while the readers sit on 200 MB responses, and memory stays flat
        for i in range(10):
            out = raw_exchange(lb.port, b"GET /bytes?n=1000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            (r,) = parse_stream(out)
            assert r.status == 200 and len(r.body) == 1_000_000, i
            peak = max(peak, rss_kib(lb.pid))
        # the balancer stops reading the backend rather than buffering for the stalled client
        assert peak - base < 48 * 1024, (base, peak)
        # a client that reads nothing is eventually cut (no progress for backend_response): it
        # gets a truncated response and EOF, not the 200 MB
        wait_for(lambda: lb_status(lb)["client_connections"] == 0, 60, "stalled readers cut")
        for s in readers:
            total, eof = _drain_to_eof(s, size, 60)
            assert eof and total < size // 2, (total, eof)
        assert rss_kib(lb.pid) - base < 48 * 1024

        # and the balancer serves on; the one backend may still be winding down its six 200 MB
        # bodies when the readers are cut (a 504 from backend_response then is the right answer,
        # seen once in CI), so the check is that a plain request gets its 200 soon after
        def served() -> bool:
            out = raw_exchange(lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return [r.status for r in parse_stream(out)] == [200]

        wait_for(served, 30, "a 200 for a plain request after the readers were cut")
    finally:
        for s in readers:
            s.close()


def test_non_reading_clients_do_not_eject_healthy_backends(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("nr1", "nr2")]
    lb = lb_factory(
        "[timeouts]\nbackend_response = 1.5\n[pools.web]\nretries = 0\n"
        '[pools.web.health]\ntype = "none"\n'  # outlier detection at its defaults
        + backends_toml("web", workers)
    )
    readers = [_start_non_reader(lb.port, "/bytes?n=200000000") for _ in range(10)]
    try:
        for s in readers:
            _drain_to_eof(s, 1, 5)  # response started; now stop reading
        # wait until the balancer has cut every stalled client
        wait_for(lambda: lb_status(lb)["client_connections"] == 0, 30, "stalled clients cut")
        backends = lb_status(lb)["pools"]["web"]["backends"]
        # the backends did nothing wrong: they must stay eligible and carry no failure
        assert [b["state"] for b in backends] == ["up", "up"], backends
        assert all("timeout" not in b["failures"] for b in backends), backends
    finally:
        for s in readers:
            s.close()


# -- connection flood ---------------------------------------------------------------------------


def test_connection_flood_is_refused_fast_and_recovers(web_worker_factory, lb_factory):
    w = web_worker_factory("fl")
    lb = lb_factory(
        "[limits]\nmax_client_connections = 50\n" '[pools.web.health]\ntype = "none"\n'
        + backends_toml("web", [w])
    )
    held = [new_client(lb.port) for _ in range(50)]
    flood: list[socket.socket] = []
    try:
        for c in held:
            assert c.get("/whoami").status == 200
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
            flood.append(s)
        refused_503 = 0
        for s in flood:
            # refused at once, before any request is sent: a 503 or a plain close, never a hang
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
            if out:
                (r,) = parse_stream(out)
                assert r.status == 503, out
                refused_503 += 1
        assert refused_503 > 0
        # existing clients keep working
        for c in held:
            r = c.get("/whoami")
            assert r.status == 200
    finally:
        for s in flood:
            s.close()
        for c in held:
            c.close()

    def new_client_ok() -> bool:
        out = raw_exchange(lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return out.startswith(b"HTTP/1.1 200")

    wait_for(new_client_ok, 20, "new clients accepted after the flood")
    # and room for 50 again
    again = [new_client(lb.port) for _ in range(45)]
    try:
        assert all(c.get("/whoami").status == 200 for c in again)
    finally:
        for c in again:
            c.close()


# -- misbehaving backends -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_lb(module_lb_factory) -> Iterator[tuple[LbProcess, MisbehavingBackend]]:
    # Shared by the module's misbehaving-backend tests: each checks its own requests' answers
    # (tagged, so crosstalk shows) on connections of its own, whatever the pool kept before.
    bad = MisbehavingBackend()
    try:
        lb = module_lb_factory(
            "[timeouts]\nbackend_response = 1.5\n[pools.web]\nretries = 0\n" + NO_HEALTH_NO_OUTLIER
            + f'[[pools.web.backends]]\nname = "bad"\naddress = "{bad.address}"\n'
        )
        yield lb, bad
    finally:
        bad.close()


# (Extra bytes sent a while after a complete response are left out on purpose: when
# they arrive after the balancer has reused the connection for the next request no proxy can
# tell them from that request's response.)
# What a client may see for each misbehaviour: "502", "504", "trunc" (a cut response then EOF),
# or a predicate on a clean 200 response. Any response may also come with the connection closed.
BEHAVIOURS: dict[str, tuple[str, ...]] = {
    "short": ("502", "trunc"),
    "long": ("502", "hello"),
    "garbage": ("502",),
    "midclose": ("502", "trunc"),
    "closenow": ("502",),
    "clte": ("502", "hello"),
    "continue": ("ok",),
    "continuegarbage": ("502",),
    "headbody": ("502", "head"),
    "hang": ("504",),
}


def _one_misbehaviour(port: int, kind: str, tag: str, log: list[bytes]) -> str:
    """One bad request and then a good one on the same connection (when it survives)."""
    c = new_client(port, timeout=20)
    method = "HEAD" if kind == "headbody" else "GET"
    try:
        c.send(f"{method} /{kind}/{tag} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        try:
            r = c.response(method)
        except http.client.IncompleteRead:
            outcome = "trunc"
            assert c.at_eof(), kind  # a truncated response is followed by a close
            return outcome
        log.append(r.body)
        if r.status == 502:
            outcome = "502"
        elif r.status == 504:
            outcome = "504"
        elif r.status == 200 and kind == "headbody":
            assert r.body == b"", r
            outcome = "head"
        elif r.status == 200 and r.body == b"hello":
            outcome = "hello"
        elif r.status == 200 and r.body == f"ok:{tag}".encode():
            outcome = "ok"
        else:
            raise AssertionError(f"{kind}: unexpected response {r}")
        if r.headers.get("connection", "").lower() == "close":
            assert c.at_eof(), kind
            return outcome
        # the connection stayed open: the next response is exactly the next request's
        c.send(f"GET /ok/{tag}-next HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        r2 = c.response()
        log.append(r2.body)
        assert (r2.status, r2.body) == (200, f"ok:{tag}-next".encode()), (kind, r2)
        return outcome
    finally:
        c.close()


def test_misbehaving_backends_give_502_504_or_truncation_never_crosstalk(bad_lb):
    lb, _bad = bad_lb
    stop = threading.Event()
    b_log: list[tuple[int, bytes]] = []
    b_errors: list[str] = []

    def client_b() -> None:
        # a well-behaved client hammering good requests on the same backend meanwhile
        j = 0
        c = new_client(lb.port)
        try:
            while not stop.is_set() and j < 5000:
                r = c.get(f"/ok/B{j}")
                b_log.append((r.status, r.body))
                if (r.status, r.body) != (200, f"ok:B{j}".encode()):
                    b_errors.append(f"B{j}: {r}")
                j += 1
                if r.headers.get("connection", "").lower() == "close":
                    c.close()
                    c = new_client(lb.port)
        except Exception as exc:  # noqa: BLE001  (reported below)
            b_errors.append(repr(exc))
        finally:
            c.close()

    t = threading.Thread(target=client_b, daemon=True)
    t.start()
    a_log: list[bytes] = []
    outcomes: dict[str, set[str]] = {}
    try:
        for rnd in range(2):
            for kind, allowed in BEHAVIOURS.items():
                got = _one_misbehaviour(lb.port, kind, f"A{rnd}{kind}", a_log)
                outcomes.setdefault(kind, set()).add(got)
                assert got in allowed, (kind, got)
    finally:
        stop.set()
        t.join(30)
    assert not b_errors, b_errors[:5]
    assert len(b_log) > 20
    # nobody ever saw bytes of an extra, leaked or garbage response, or another client's tag
    for body in a_log:
        assert b"SMUGGLED" not in body and b"ok:B" not in body, body
    for _status, body in b_log:
        assert b"SMUGGLED" not in body and b"ok:A" not in body and b"hello" not in body, body


def test_backend_hang_gives_504_and_two_clients_see_no_crosstalk(bad_lb):
    lb, _ = bad_lb
    results: dict[str, list[tuple[int, bytes]]] = {"x": [], "y": []}

    def run(name: str) -> None:
        c = new_client(lb.port, timeout=20)
        try:
            for i in range(30):
                path = f"/hang/{name}{i}" if i % 10 == 5 else f"/ok/{name}{i}"
                r = c.get(path)
                results[name].append((r.status, r.body))
                if r.headers.get("connection", "").lower() == "close":
                    c.close()
                    c = new_client(lb.port, timeout=20)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for name, rs in results.items():
        assert len(rs) == 30, (name, rs)
        for i, (status, body) in enumerate(rs):
            if i % 10 == 5:
                assert status == 504, (name, i, status, body)
            else:
                assert (status, body) == (200, f"ok:{name}{i}".encode()), (name, i, status, body)


def test_interim_100_is_not_forwarded_to_http10_client(bad_lb):
    lb, _ = bad_lb
    out = raw_exchange(lb.port, b"GET /continue/old HTTP/1.0\r\nHost: t\r\n\r\n")
    first = out.split(b"\r\n", 1)[0]
    assert first.startswith(b"HTTP/1.1 200"), out[:300]
    assert out.endswith(b"ok:old")


def test_unsolicited_101_is_a_502(bad_lb):
    lb, _ = bad_lb
    c = new_client(lb.port)
    try:
        c.send(b"GET /upgrade101/u HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response()
        assert r.status == 502, r
    finally:
        c.close()


def test_101_carries_connection_upgrade_only(bad_lb):
    lb, _ = bad_lb
    c = new_client(lb.port)
    try:
        c.send(b"GET /upgrade101/u HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
        r = c.response()
        assert r.status == 101
        conn = [v.lower() for k, v in r.raw_headers if k.lower() == "connection"]
        assert conn == ["upgrade"], r.raw_headers
    finally:
        c.close()


def test_failed_attempt_with_no_other_backend_is_502_or_504_not_503(lb_factory):
    bad = MisbehavingBackend()
    try:
        lb = lb_factory(
            "[timeouts]\nbackend_response = 1.0\n" + NO_HEALTH_NO_OUTLIER  # retries: default 2
            + f'[[pools.web.backends]]\nname = "bad"\naddress = "{bad.address}"\n'
        )
        out = raw_exchange(lb.port, b"GET /closenow/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [r.status for r in parse_stream(out)] == [502], out[:300]
        out = raw_exchange(lb.port, b"GET /hang/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [r.status for r in parse_stream(out)] == [504], out[:300]
    finally:
        bad.close()




def test_min_transfer_rate_cuts_slow_readers_and_slow_senders(web_worker_factory, lb_factory):
    w = web_worker_factory("rate")
    # backend_response is long, so only the rate check can cut these clients quickly
    lb = lb_factory(
        "[timeouts]\nbackend_response = 60.0\n"
        "[limits]\nmin_transfer_rate = 1000000\nmin_rate_grace = 1.0\n"
        "[pools.web]\nretries = 0\n" + NO_HEALTH_NO_OUTLIER + backends_toml("web", [w])
    )
    # a reader that stops reading after the first bytes
    reader = _start_non_reader(lb.port, "/bytes?n=200000000")
    reader.settimeout(30)
    assert reader.recv(100).startswith(b"HTTP/1.1 200")
    # a sender that trickles its request body: 10 bytes per 50 ms is 200 B/s
    sender = socket.create_connection(("127.0.0.1", lb.port), timeout=30)
    sender.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    sender.setblocking(False)
    answer = b""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            sender.send(b"x" * 10)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass
        # The trickle's pace: wait up to 50 ms for the balancer's answer.
        if not select.select([sender], [], [], 0.05)[0]:
            continue
        try:
            chunk = sender.recv(65536)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # The non-reader is cut too, long before backend_response, once the bytes the kernel's
    # buffers absorbed no longer lift its average above the rate; the backend is not blamed.
    wait_for(lambda: _metric(lb, "tierproxy_lb_client_connections_too_slow_total") >= 2, 50,
             "the non-reading client to be cut")
    total, eof = _drain_to_eof(reader, 300_000_000, 30)
    assert eof and total < 200_000_000  # a truncated response, then the connection closed
    assert _metric(lb, "tierproxy_lb_backend_ejections_total") == 0
    # and normal clients are served at full speed meanwhile
    code, body = http_json(lb.url("/whoami"))
    assert code == 200 and body["instance"] == "rate"
    reader.close()
    sender.close()
