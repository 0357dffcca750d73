"""Instructions (callgrind Ir) of the lb process per plain HTTP/1.1 request, on real sockets.

One backend (`python -m bench.backend`), an lb with an http listener under `valgrind
--tool=callgrind`, then h2load through it, `--h1 -c 4 -m 1` (HTTP/1.1 keep-alive, one request at a
time per connection), -n A then -n B requests with a dump after each: (Ir(B) - Ir(A)) / (B - A)
is one request's cost, start-up cancelled out. Unlike scripts/native_callgrind.py's `exchange`
case (fake transports), this counts what the lb's writes cost in uvloop and libc (the direct
sends of proxy/core/sendnow.py, docs/perf.md). Counts do not depend on what else the machine
runs. Run from a checkout: `PYTHONPATH=$PWD python scripts/lb_callgrind.py [A B [ROUNDS]]`.
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

A, B = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (400, 2000)
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
d = Path(tempfile.mkdtemp(prefix="lbcg-"))
be, fe, ad = allocate_port(), allocate_port(), allocate_port()
(d / "lb.toml").write_text(f"""
admin = {{ address = "127.0.0.1:{ad.port}" }}
[[listeners]]
name = "web"
address = "127.0.0.1:{fe.port}"
protocol = "http"
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
url = f"http://127.0.0.1:{fe.port}/"


def h2load(n: int) -> None:
    args = ["h2load", "-n", str(n), "-c", "4", "--h1", "-m", "1", url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800)
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
    while subprocess.run(["curl", "-s", "-o", "/dev/null", url], capture_output=True).returncode != 0:
        if time.time() > deadline or lb.poll() is not None:
            raise SystemExit((d / "lb.log").read_text())
        time.sleep(1)
    h2load(100)  # warm-up: code paths and caches touched once
    for _ in range(ROUNDS):
        counts = {}
        for n in (A, B):
            dump()  # a dump holds what ran since the previous one
            h2load(n)
            counts[n] = dump()
        print(f"HTTP/1.1: {(counts[B] - counts[A]) / (B - A) / 1e3:.2f} k Ir per request", flush=True)
finally:
    lb.terminate()
    lb.wait(120)
    backend.terminate()
