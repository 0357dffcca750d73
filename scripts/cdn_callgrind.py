"""Instructions (callgrind Ir) of the `tierproxy cdn` process per cache hit.

A real origin (tests/integration/cdnorigin.py, 4 KiB objects with `Cache-Control: max-age=3600`),
a cdn under `valgrind --tool=callgrind`, every object requested once (a miss stores it), then one
keep-alive connection sends N hits, cycling over the objects, each request like wrk's
(request-line and Host), each response read whole before the next request, for N = A, A, B with
a dump after each: (Ir(B) - Ir(A)) / (B - A) is the cost of one hit, start-up and fills cancelled
out. Instruction counts do not depend on what else the machine runs, unlike the bench's ratios.
Run from a checkout: `PYTHONPATH=$PWD python scripts/cdn_callgrind.py` (TIERPROXY_PURE=1 for
the pure twins).
"""
import glob, os, re, socket, subprocess, sys, tempfile, time
from pathlib import Path
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import python_child_env

A, B, OBJECTS = 500, 1500, 10
REPO = Path(__file__).resolve().parents[1]
d = Path(tempfile.mkdtemp(prefix="cdncg-"))
procs: list[subprocess.Popen] = []


def free_port() -> int:
    lock = allocate_port("127.0.0.1")
    getattr(lock, "release", lambda: None)()
    return lock.port


def wait(port: int, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + 600
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not come up: {(d / 'cdn.log').read_text()}")


def read_response(s: socket.socket, buf: bytearray) -> bytes:
    """One whole Content-Length response from `s` (`buf` keeps bytes past it)."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise SystemExit("cdn closed the connection")
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(buf) < end + length:
        data = s.recv(65536)
        if not data:
            raise SystemExit("cdn closed the connection")
        buf += data
    del buf[:end + length]
    return head


try:
    oport, port, aport = free_port(), free_port(), free_port()
    env = python_child_env()
    procs.append(subprocess.Popen([sys.executable, "-m", "tests.integration.cdnorigin", str(oport)], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait(oport, "origin")
    (d / "cdn.toml").write_text(f'listen = "127.0.0.1:{port}"\norigins = ["127.0.0.1:{oport}"]\n'
                                f'admin = {{ address = "127.0.0.1:{aport}" }}\n[cache]\nmax_bytes = 67108864\n')
    out = d / "cg.out"
    cdn = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable, "-m",
                            "proxy.cli", "cdn", "--config", str(d / "cdn.toml")], cwd=REPO, env=env,
                           stdout=open(d / "cdn.log", "w"), stderr=subprocess.STDOUT)
    procs.append(cdn)
    wait(port, "cdn", cdn)
    paths = [b"/obj/o%d?size=4096&cc=max-age%%3D3600" % i for i in range(OBJECTS)]
    reqs = [b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (p, port) for p in paths]
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray()
    for r in reqs:  # fill: every object stored
        s.sendall(r)
        read_response(s, buf)
    for r in reqs:
        s.sendall(r)
        assert b"; hit" in read_response(s, buf), "not a hit after the fill"

    def dump() -> int:
        subprocess.run(["callgrind_control", "-d", str(cdn.pid)], capture_output=True)
        time.sleep(0.5)
        files = sorted(glob.glob(f"{out}.{cdn.pid}*"), key=os.path.getmtime)
        txt = open(files[-1]).read()
        m = re.search(r"^summary:\s*(\d+)", txt, re.M) or re.search(r"^totals:\s*(\d+)", txt, re.M)
        return int(m.group(1))

    irs = {}
    for n in (A, A, B):
        dump()
        for i in range(n):
            s.sendall(reqs[i % OBJECTS])
            head = read_response(s, buf)
        assert b"; hit" in head, head
        irs[n] = dump()
    print(f"cdn hit (4 KiB, keep-alive): {(irs[B] - irs[A]) / (B - A) / 1e3:.1f} k Ir per hit", flush=True)
    s.close()
finally:
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
