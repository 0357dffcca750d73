"""tierproxy geodns as a real process, asked by real dig and dnspython clients; 127.0.0.2 and
127.0.0.3 play clients in the regions east and west. Health targets are small servers the tests
own and kill."""

from __future__ import annotations

import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.geodnsproc import GeoDnsProcess, addresses
from tests.integration.lbproc import LbProcess, http_json, wait_for

pytestmark = pytest.mark.integration

EAST, WEST = "192.0.2.10", "198.51.100.10"
INTERVAL, TTL = 0.5, 1


class Target:
    """A health target the test owns: answers every connection with an HTTP 200 and closes.
    `kill()` stops listening (connections refused); `revive()` listens again on the same port."""

    def __init__(self) -> None:
        self._lock = allocate_port()
        self.port = self._lock.port
        self._thread: threading.Thread | None = None
        self.revive()

    def revive(self) -> None:
        self._stop = threading.Event()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.05)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock, self._stop), daemon=True)
        self._thread.start()

    @staticmethod
    def _serve(sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                conn.settimeout(1)
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            except OSError:
                pass
            conn.close()
        sock.close()

    def kill(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def close(self) -> None:
        self.kill()
        self._lock.release()


def body(east_port: int, west_port: int, app_ttl: int = TTL, split: str = "east = 70, west = 30",
         east_health: str | None = None) -> str:
    east_health = east_health or f'{{ type = "tcp", address = "127.0.0.1:{east_port}" }}'
    return f'''
[health]
interval = {INTERVAL}
timeout = 0.4
rise = 1
fall = 1

[regions]
networks = {{ "127.0.0.2/32" = "east", "127.0.0.3/32" = "west", "10.1.0.0/16" = "east", "10.2.0.0/16" = "west" }}

[datacenters.east]
addresses = ["{EAST}"]
health = [{east_health}]

[datacenters.west]
addresses = ["{WEST}"]
health = [{{ type = "http", url = "http://127.0.0.1:{west_port}/healthz" }}]

[[zones]]
origin = "example.test."
soa = {{ mname = "ns1.example.test.", rname = "hostmaster.example.test.", minimum = 60 }}
ns = ["ns1.example.test."]
records = [
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "www", type = "CNAME", value = "app" }},
  {{ name = "a.deep", type = "TXT", value = "\\"hi\\"" }},
  {{ name = "big", type = "TXT", value = "\\"{"x" * 200}\\"" }},
  {{ name = "big", type = "TXT", value = "\\"{"y" * 200}\\"" }},
  {{ name = "big", type = "TXT", value = "\\"{"z" * 200}\\"" }},
]
names = [
  {{ name = "app", policy = "geo", ttl = {app_ttl}, drain_ttl = 1, datacenters = ["east", "west"], regions = {{ east = {{ datacenters = ["east", "west"] }}, west = {{ datacenters = ["west", "east"] }} }} }},
  {{ name = "split", policy = "weighted", ttl = 60, weights = {{ {split} }} }},
]
'''


@pytest.fixture
def targets():
    east, west = Target(), Target()
    yield east, west
    east.close()
    west.close()


@pytest.fixture
def geodns(tmp_path: Path, targets):
    east, west = targets
    proc = GeoDnsProcess(tmp_path, body(east.port, west.port))
    proc.start()
    yield proc
    rc = proc.stop()
    assert rc == 0, proc.log_tail()


@pytest.fixture(scope="module")
def shared_geodns(tmp_path_factory):
    """The same server over two healthy targets, shared by the tests that only ask it questions
    (answers, rcodes, EDNS, garbage it must survive); tests that kill targets, reload or drain
    get their own `geodns`."""
    east, west = Target(), Target()
    try:
        proc = GeoDnsProcess(tmp_path_factory.mktemp("geodns"), body(east.port, west.port))
        proc.start()
        yield proc
        rc = proc.stop()
        assert rc == 0, proc.log_tail()
    finally:
        east.close()
        west.close()


def dig_status(out: str) -> str:
    m = re.search(r"status: (\w+)", out)
    assert m, out
    return m.group(1)


def dig_answers(out: str) -> list[str]:
    return sorted(re.findall(r"^\S+\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M))


def test_two_regions_get_their_own_dc(shared_geodns):
    assert dig_answers(shared_geodns.dig("app.example.test", source="127.0.0.2")) == [EAST]
    assert dig_answers(shared_geodns.dig("app.example.test", source="127.0.0.3")) == [WEST]
    assert addresses(shared_geodns.query("app.example.test", source="127.0.0.2")) == [EAST]
    assert addresses(shared_geodns.query("www.example.test", source="127.0.0.3")) == [WEST]


def test_ecs_honoured_and_echoed_with_scope(shared_geodns):
    out = shared_geodns.dig("app.example.test", "+subnet=10.2.5.0/24", source="127.0.0.2")
    assert dig_answers(out) == [WEST]
    assert "CLIENT-SUBNET: 10.2.5.0/24/16" in out  # the /16 region entry decided
    r = shared_geodns.query("app.example.test", source="127.0.0.3", use_edns=0,
                     options=[dns.edns.ECSOption("10.1.9.0", 24)])  # fmt: skip
    assert addresses(r) == [EAST]
    (ecs,) = r.options
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("10.1.9.0", 24, 16)


def test_weighted_split_over_10000_client_subnets(shared_geodns):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    counts = {EAST: 0, WEST: 0}
    try:
        for i in range(10000):
            subnet = f"10.{100 + (i >> 8) % 100}.{i & 255}.0"
            q = dns.message.make_query("split.example.test", "A", use_edns=0,
                                       options=[dns.edns.ECSOption(subnet, 24)])  # fmt: skip
            r = dns.query.udp(q, "127.0.0.1", port=shared_geodns.port, sock=sock, timeout=3)
            (addr,) = addresses(r)
            counts[addr] += 1
        assert abs(counts[EAST] / 100 - 70) <= 2, counts
        # one client subnet: the same answer every time, whatever the source address
        seen = {addresses(shared_geodns.query("split.example.test", source=src, use_edns=0,
                                       options=[dns.edns.ECSOption("10.150.7.0", 24)]))[0]
                for src in ("127.0.0.2", "127.0.0.3", "127.0.0.1") for _ in range(5)}  # fmt: skip
        assert len(seen) == 1
    finally:
        sock.close()


def test_health_target_killed_then_recovered(geodns, targets):
    east, _west = targets
    assert addresses(geodns.query("app.example.test", source="127.0.0.2")) == [EAST]
    killed = time.monotonic()
    east.kill()

    def all_west() -> bool:
        return all(addresses(geodns.query("app.example.test", source=s)) == [WEST]
                   for s in ("127.0.0.2", "127.0.0.3"))  # fmt: skip

    wait_for(all_west, 20, "every answer to name the west data center")
    # one check interval (fall = 1) plus the check's timeout plus one TTL, with room for a loaded machine
    assert time.monotonic() - killed < INTERVAL + 0.4 + TTL + 3.0
    st = http_json(geodns.admin("/status"))[1]
    assert st["datacenters"]["east"]["healthy"] is False
    east.revive()
    wait_for(lambda: addresses(geodns.query("app.example.test", source="127.0.0.2")) == [EAST], 20,
             "east back after recovery")  # fmt: skip


def test_rcodes_with_dig(shared_geodns):
    out = shared_geodns.dig("nope.example.test")
    assert dig_status(out) == "NXDOMAIN" and re.search(r"AUTHORITY SECTION:\nexample.test.\s+60\s+IN\s+SOA", out)
    out = shared_geodns.dig("deep.example.test", "A")  # an empty non-terminal: NODATA
    assert dig_status(out) == "NOERROR" and "ANSWER: 0" in out and "IN\tSOA" in out
    out = shared_geodns.dig("ns1.example.test", "AAAA")
    assert dig_status(out) == "NOERROR" and "ANSWER: 0" in out and "IN\tSOA" in out
    assert dig_status(shared_geodns.dig("example.org")) == "REFUSED"
    assert dig_status(shared_geodns.dig("+opcode=status", "app.example.test")) == "NOTIMP"
    assert dig_status(shared_geodns.dig("+edns=1", "+noednsnegotiation", "app.example.test")) == "BADVERS"
    out = shared_geodns.dig("aPp.ExAmple.test")
    assert ";aPp.ExAmple.test.\t\tIN\tA" in out  # the question's case kept


def test_truncation_then_tcp(shared_geodns):
    out = shared_geodns.dig("+noedns", "+ignore", "big.example.test", "TXT")
    assert re.search(r"flags: qr aa( rd)? tc", out) or "flags: qr tc aa" in out, out
    out = shared_geodns.dig("+noedns", "big.example.test", "TXT")  # dig retries over TCP on TC
    assert "Truncated, retrying in TCP mode" in out and "ANSWER: 3" in out
    r = shared_geodns.query("big.example.test", "TXT")
    assert r.flags & dns.flags.TC and not r.answer
    r = shared_geodns.query("big.example.test", "TXT", tcp=True)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 3


def test_formerr_and_garbage_do_not_stop_the_server(shared_geodns):
    rng = random.Random(1234)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        q = dns.message.make_query("app.example.test", "A")
        q.question.append(q.question[0])  # two questions: FORMERR
        sock.sendto(q.to_wire(), ("127.0.0.1", shared_geodns.port))
        assert dns.message.from_wire(sock.recv(4096)).rcode() == dns.rcode.FORMERR
        loop = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"
        sock.sendto(loop, ("127.0.0.1", shared_geodns.port))
        reply = sock.recv(4096)
        assert reply[:2] == b"\xab\xcd" and reply[3] & 0x0F == dns.rcode.FORMERR
        for _ in range(300):
            sock.sendto(rng.randbytes(rng.randrange(0, 200)), ("127.0.0.1", shared_geodns.port))
    finally:
        sock.close()
    assert addresses(shared_geodns.query("app.example.test", source="127.0.0.2")) == [EAST]
    # TCP: several queries on one connection (RFC 7766), garbage among them answered FORMERR
    good = [dns.message.make_query(n, "A") for n in ("app.example.test", "www.example.test", "nx.example.test")]
    garbage = b"\x00\x07\x01\x00\x00\x01\x00\x00"
    with socket.create_connection(("127.0.0.1", shared_geodns.port), timeout=3) as c:
        payload = b"".join(len(w).to_bytes(2, "big") + w for w in [good[0].to_wire(), garbage[:2] + b"\x01\x00"
                                                                  + b"\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01",
                                                                  good[1].to_wire(), good[2].to_wire()])  # fmt: skip
        c.sendall(payload)
        buf = b""
        answers = []
        while len(answers) < 4:
            chunk = c.recv(65536)
            assert chunk, "connection closed early"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                n = int.from_bytes(buf[:2], "big")
                answers.append(dns.message.from_wire(buf[2 : 2 + n]))
                buf = buf[2 + n :]
    assert [a.rcode() for a in answers] == [dns.rcode.NOERROR, dns.rcode.FORMERR, dns.rcode.NOERROR,
                                            dns.rcode.NXDOMAIN]  # fmt: skip
    assert answers[0].id == good[0].id and answers[3].id == good[2].id
    assert shared_geodns.proc.poll() is None


def test_sighup_reload_changes_an_answer(geodns, targets):
    east, west = targets
    q = dict(use_edns=0, options=[dns.edns.ECSOption("10.150.7.0", 24)])
    assert addresses(geodns.query("split.example.test", **q)) in ([EAST], [WEST])
    geodns.write_config(body(east.port, west.port, split="east = 0, west = 100"))
    geodns.signal(signal.SIGHUP)
    wait_for(lambda: all(addresses(geodns.query("split.example.test", use_edns=0,
                                                options=[dns.edns.ECSOption(f"10.{i}.0.0", 24)])) == [WEST]
                         for i in range(20)), 15, "the reloaded weights")  # fmt: skip
    assert http_json(geodns.admin("/status"))[1]["reloads"] == 1


def test_admin_drain_explain_and_metrics(geodns, tmp_path):
    code, ex = http_json(geodns.admin("/explain?client=10.2.3.4"))
    assert code == 200 and ex["region"] == "west" and ex["names"]["app.example.test."]["addresses"] == [WEST]
    assert "10.2.0.0/16" in ex["region_why"]
    assert http_json(geodns.admin("/explain?client=nonsense"))[0] == 400
    code, _ = http_json(geodns.admin("/datacenters/west/drain"), "POST")
    assert code == 200
    r = geodns.query("app.example.test", source="127.0.0.3")
    assert addresses(r) == [EAST] and r.answer[0].ttl == 1  # drained: out, with the drain TTL
    assert http_json(geodns.admin("/datacenters/nowhere/drain"), "POST")[0] == 404
    # the admin guard: a change without a JSON content type is refused
    req = urllib.request.Request(geodns.admin("/datacenters/west/undrain"), data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 415
    assert http_json(geodns.admin("/datacenters/west/undrain"), "POST")[0] == 200
    assert addresses(geodns.query("app.example.test", source="127.0.0.3")) == [WEST]
    with urllib.request.urlopen(geodns.admin("/"), timeout=5) as resp:
        assert b"tierproxy geodns" in resp.read()
    with urllib.request.urlopen(geodns.admin("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    assert re.search(r'tierproxy_geodns_queries_total\{qtype="A"\} [1-9]', text)
    assert re.search(r'tierproxy_geodns_datacenter_answers_total\{datacenter="west"\} [1-9]', text)
    assert 'tierproxy_geodns_datacenter_up{datacenter="east"} 1.0' in text
    assert re.search(r'tierproxy_geodns_region_queries_total\{region="west"\} [1-9]', text)
    promtool = shutil.which("promtool")
    if promtool:
        proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workers_share_the_port_and_the_health(tmp_path: Path, targets):
    east, west = targets
    proc = GeoDnsProcess(tmp_path, "workers = 2\n" + body(east.port, west.port))
    proc.start()
    try:
        st = http_json(proc.admin("/status"))[1]
        assert len(st["worker_pids"]) == 2
        for _ in range(20):  # new sockets each time: the kernel spreads them over both workers
            assert addresses(proc.query("app.example.test", source="127.0.0.2")) == [EAST]
        east.kill()  # the supervisor's checks reach every worker
        wait_for(lambda: all(addresses(proc.query("app.example.test", source="127.0.0.2")) == [WEST]
                             for _ in range(20)), 20, "every worker to answer west")  # fmt: skip
        with urllib.request.urlopen(proc.admin("/metrics"), timeout=5) as resp:
            text = resp.read().decode()
        m = re.search(r'tierproxy_geodns_queries_total\{qtype="A"\} (\d+)', text)
        assert m and int(float(m.group(1))) >= 40
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_lb_status_target_follows_the_share_of_healthy_backends(tmp_path: Path, targets):
    """east is healthy while at least 60% of its `tierproxy lb`'s backends are up: one of two
    killed (50%) moves east's clients to west; revived, they come back."""
    east, west = targets
    b1, b2 = Target(), Target()
    lb = LbProcess(tmp_path, f'''
[pools.web]
health = {{ interval = 0.3, timeout = 0.25, rise = 1, fall = 1 }}
backends = [{{ name = "a", address = "127.0.0.1:{b1.port}" }}, {{ name = "b", address = "127.0.0.1:{b2.port}" }}]
''')
    lb.start()
    dns_dir = tmp_path / "dns"
    dns_dir.mkdir()
    target = f'{{ type = "lb_status", url = "http://127.0.0.1:{lb.admin_port}/status", min_healthy = 0.6 }}'
    proc = GeoDnsProcess(dns_dir, body(east.port, west.port, east_health=target))
    try:
        proc.start()
        assert addresses(proc.query("app.example.test", source="127.0.0.2")) == [EAST]
        b2.kill()
        wait_for(lambda: addresses(proc.query("app.example.test", source="127.0.0.2")) == [WEST], 20,
                 "east's clients to move west")  # fmt: skip
        targets_st = http_json(proc.admin("/status"))[1]["datacenters"]["east"]["targets"]
        assert "1/2 backends up" in targets_st[0]["reason"]
        b2.revive()
        wait_for(lambda: addresses(proc.query("app.example.test", source="127.0.0.2")) == [EAST], 20,
                 "east back")  # fmt: skip
    finally:
        assert proc.stop() == 0, proc.log_tail()
        lb.stop()
        b1.close()
        b2.close()


def test_idle_tcp_connection_closed_and_sigterm_exits_cleanly(tmp_path: Path, targets):
    east, west = targets
    proc = GeoDnsProcess(tmp_path, "tcp_idle_timeout = 0.5\n" + body(east.port, west.port))
    proc.start()
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as c:
            w = dns.message.make_query("app.example.test", "A").to_wire()
            c.sendall(len(w).to_bytes(2, "big") + w)
            n = int.from_bytes(c.recv(2), "big")
            assert n > 0
            c.recv(n)
            started = time.monotonic()
            assert c.recv(10) == b""  # closed by the server once idle
            assert time.monotonic() - started < 5
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_edns_compliance_checks_with_dig(shared_geodns):
    """The queries of ISC's EDNS compliance tester (ednscomp), asked with dig."""
    cases = {
        "plain": (["+noedns"], "NOERROR"),
        "edns": (["+edns=0"], "NOERROR"),
        "edns1": (["+edns=1", "+noednsneg"], "BADVERS"),
        "ednsflags": (["+edns=0", "+ednsflags=0x40"], "NOERROR"),
        "ednsopt": (["+edns=0", "+ednsopt=100"], "NOERROR"),
        "edns1opt": (["+edns=1", "+noednsneg", "+ednsopt=100"], "BADVERS"),
        "do": (["+edns=0", "+dnssec"], "NOERROR"),
        "ednstcp": (["+edns=0", "+tcp"], "NOERROR"),
        "zflag": (["+edns=0", "+zflag"], "NOERROR"),
    }
    for name, (args, status) in cases.items():
        out = shared_geodns.dig("+norec", *args, "app.example.test", source="127.0.0.2")
        assert dig_status(out) == status, (name, out)
        if status == "NOERROR":
            assert dig_answers(out) == [EAST], (name, out)
            assert "MBZ" not in out, (name, out)  # no unknown EDNS flag or Z bit echoed
        if "+edns=0" in args:
            assert "EDNS: version: 0" in out, (name, out)
            assert "\n; OPT=100" not in out, (name, out)  # unknown options are not echoed
        if name == "do":
            assert re.search(r"EDNS: version: 0, flags: do;", out), out


def test_a_bad_reload_keeps_the_running_config(geodns, targets):
    geodns.config_path.write_text(geodns.config_path.read_text() + "\nbogus = 1\n")
    code, body_ = http_json(geodns.admin("/reload"), "POST")
    assert code == 400 and "bogus: unknown key" in body_["error"]
    geodns.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in geodns.log_tail(), 10, "the failed reload to be logged")
    assert addresses(geodns.query("app.example.test", source="127.0.0.3")) == [WEST]
    assert http_json(geodns.admin("/status"))[1]["reloads"] == 0
