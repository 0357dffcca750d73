"""Instructions (callgrind Ir) of the lb process per request, on real sockets: plain HTTP/1.1, or
HTTP/2 and HTTP/1.1 over TLS (`--tls`).

One backend (`python -m bench.backend`), an lb with an http listener (or, `--tls`, an https one
with `http2 = true` and a self-signed P-256 certificate) under `valgrind --tool=callgrind`
(timeouts long enough for a process under callgrind on a loaded machine), then h2load through
it: `--h1 -c 4 -m 1` (HTTP/1.1 keep-alive, one request at a time per connection) or `-c 4 -m 10`
(HTTP/2), -n A then -n B requests with a dump after each: (Ir(B) - Ir(A)) / (B - A) is one
request's cost, start-up cancelled out (with TLS the 4 handshakes are in both, so they cancel
too). Unlike scripts/native_callgrind.py's `exchange` case (fake transports), this counts what the
lb's writes cost in uvloop and libc (the direct sends of proxy/core/sendnow.py, docs/perf.md).
Counts do not depend on what else the machine runs. Run from a checkout:
`PYTHONPATH=$PWD python scripts/lb_callgrind.py [--tls] [A B [ROUNDS]]`.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxy.devstack.ports import allocate_port
from proxy.devstack.process import python_child_env

args = sys.argv[1:]
TLS = "--tls" in args
args = [a for a in args if a != "--tls"]
A, B = (int(args[0]), int(args[1])) if len(args) > 1 else ((400, 1400) if TLS else (400, 2000))
ROUNDS = int(args[2]) if len(args) > 2 else (1 if TLS else 2)
d = Path(tempfile.mkdtemp(prefix="lbcg-"))
be, fe, ad = allocate_port(), allocate_port(), allocate_port()
if TLS:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", d / "k.pem", "-out", d / "c.pem", "-subj", "/CN=localhost", "-days", "2"],
                   check=True, capture_output=True)  # fmt: skip
    listener = f"""protocol = "https"
http2 = true
[listeners.tls]
certificates = [{{ cert_file = "{d / 'c.pem'}", key_file = "{d / 'k.pem'}" }}]"""
else:
    listener = 'protocol = "http"'
(d / "lb.toml").write_text(f"""
admin = {{ address = "127.0.0.1:{ad.port}" }}
[[listeners]]
name = "{'tls' if TLS else 'web'}"
address = "127.0.0.1:{fe.port}"
{listener}
[timeouts]
connect = 60
backend_response = 300
[pools.p]
[pools.p.health]
type = "none"
[[pools.p.backends]]
name = "b"
address = "127.0.0.1:{be.port}"
""")
for lock in (be, fe, ad):
    lock.release()
env = python_child_env()
backend = subprocess.Popen([sys.executable, "-m", "bench.backend", str(be.port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
out = d / "cg.out"
lb = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable, "-m",
                       "proxy.cli", "lb", "--config", str(d / "lb.toml")], env=env,
                      stdout=open(d / "lb.log", "w"), stderr=subprocess.STDOUT)  # fmt: skip
url = f"{'https' if TLS else 'http'}://127.0.0.1:{fe.port}/"


def h2load(n: int, h1: bool) -> None:
    cmd = ["h2load", "-n", str(n), "-c", "4"] + (["--h1", "-m", "1"] if h1 else ["-m", "10"]) + [url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", r.stdout)
    assert m and m.group(2) == str(n), r.stdout + r.stderr


def dump() -> int:
    subprocess.run(["callgrind_control", "-d", str(lb.pid)], capture_output=True)
    time.sleep(1)
    files = sorted(glob.glob(f"{out}.{lb.pid}*"), key=os.path.getmtime)
    txt = Path(files[-1]).read_text()
    m = re.search(r"^summary:\s*(\d+)", txt, re.M) or re.search(r"^totals:\s*(\d+)", txt, re.M)
    assert m is not None
    return int(m.group(1))


try:
    deadline = time.time() + 600
    while subprocess.run(["curl", "-sk", "-o", "/dev/null", url], capture_output=True).returncode != 0:
        if time.time() > deadline or lb.poll() is not None:
            raise SystemExit((d / "lb.log").read_text())
        time.sleep(1)
    for name, h1 in ((("HTTP/2", False), ("HTTP/1.1", True)) if TLS else (("HTTP/1.1", True),)):
        h2load(100, h1)  # warm-up: code paths and caches touched once
        for _ in range(ROUNDS):
            counts = {}
            for n in (A, B):
                dump()  # a dump holds what ran since the previous one
                h2load(n, h1)
                counts[n] = dump()
            where = " over TLS" if TLS else ""
            print(f"{name}{where}: {(counts[B] - counts[A]) / (B - A) / 1e3:.2f} k Ir per request", flush=True)
finally:
    lb.terminate()
    lb.wait(120)
    backend.terminate()
