"""Syscalls per transaction (dbproxy vs PgBouncer) and per request (lb vs nginx), by kind.

Counts, not times: `strace -f -c` attached to the proxy's process for the run of a fixed amount of
work, twice (A and B transactions or requests per client), and the difference divided by the
work's difference, so logins, connection set-up and whatever the daemon does at its own pace
(monitor polls, health checks) mostly cancel out. strace stops the traced process at every call,
which lets more bytes and events pile up between calls than a free run would; the totals are
also read with `perf stat -e raw_syscalls:sys_enter` (no stops) for the same work.

* `db`: a throwaway primary + 2 replicas (proxy.devstack, as `bench dbproxy`), `pgbench -i -s 1`,
  a dbproxy (workers = 1) and PgBouncer (transaction pooling, bench/pgpeers.py), then
  `pgbench -n -S -M simple|extended -c C -j 2 -t N` through each (`--workloads`: also tpcb, and
  bench/ormsql.py's ORM-like script).
* `lb`: two nginx backends serving bench/realistic.py's files, `tierproxy lb` and nginx as proxy
  (bench/servers.py's configs), then C keep-alive connections each sending N of
  bench/realistic.py's requests one after another (a blocking client per connection, in threads).

Run from a checkout: `PYTHONPATH=$PWD python scripts/syscall_counts.py db` (or `lb`).
"""

from __future__ import annotations

import argparse
import os
import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)\s*$", re.MULTILINE)


@contextlib.contextmanager
def _removed(d: Path):  # noqa: ANN202
    """Removes `d` (a run's temp dir) on the way out."""
    try:
        yield
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _threads_and_children(pid: int) -> list[int]:
    """`pid` and its child processes (nginx's worker), each attached by strace -f."""
    out = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def _wait_traced(pids: list[int]) -> None:
    """Until every thread of `pids` has a tracer (strace attaches asynchronously)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = [f"/proc/{p}/task/{t}/status" for p in pids for t in os.listdir(f"/proc/{p}/task")]
        if all(re.search(r"^TracerPid:\s*[1-9]", open(t).read(), re.MULTILINE) for t in tasks):
            return
        time.sleep(0.05)
    raise SystemExit("strace did not attach")


def strace_counts(pids: list[int], work: Callable[[], int]) -> tuple[dict[str, tuple[int, int]], int]:
    """{syscall: (calls, errors)} of `pids` (and their threads) while `work()` runs, and what
    `work()` returned (the transactions or requests it made)."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
        argv = ["strace", "-f", "-c", "-qq", "-o", f.name]
        for p in pids:
            argv += ["-p", str(p)]
        st = subprocess.Popen(argv, stderr=subprocess.PIPE)
        _wait_traced(pids)
        try:
            units = work()
        finally:
            st.send_signal(signal.SIGINT)
            st.wait(60)
        text = open(f.name).read()
    return {m.group(3): (int(m.group(1)), int(m.group(2) or 0)) for m in ROW.finditer(text)
            if m.group(3) != "total"}, units


PERF_EVENTS = ("raw_syscalls:sys_enter", "context-switches", "page-faults", "cpu-migrations")


def _cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """utime, stime (clock ticks) of `pids`, all threads."""
    u = s = 0
    for p in pids:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        u, s = u + int(f[11]), s + int(f[12])
    return u, s


def _switches(pids: list[int]) -> tuple[int, int]:
    """Voluntary (the task waited: epoll, a read) and involuntary (it was preempted, e.g. by the
    task its write woke) context switches of `pids`, all threads; perf's context-switches is
    their sum."""
    v = i = 0
    for p in pids:
        for t in os.listdir(f"/proc/{p}/task"):
            text = Path(f"/proc/{p}/task/{t}/status").read_text()
            v += int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", text, re.MULTILINE).group(1))
            i += int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", text, re.MULTILINE).group(1))
    return v, i


def perf_counts(pids: list[int], work: Callable[[], int]) -> dict[str, float]:
    """PERF_EVENTS of `pids` while `work()` runs (the raw_syscalls tracepoint: no stops), and
    the CPU they used (user_s, sys_s: times, so they vary with the machine's load)."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as f:
        st = subprocess.Popen(["perf", "stat", "-x,", "-o", f.name, "-e", ",".join(PERF_EVENTS),
                               "-p", ",".join(map(str, pids))], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # perf stat has no "attached" signal: it counts from its start
        u0, s0 = _cpu_ticks(pids)
        v0, i0 = _switches(pids)
        try:
            units = work()
        finally:
            u1, s1 = _cpu_ticks(pids)
            v1, i1 = _switches(pids)
            st.send_signal(signal.SIGINT)
            st.wait(60)
        text = open(f.name).read()
    out = {e: 0.0 for e in PERF_EVENTS}
    for m in re.finditer(r"^([\d.]+),[^,\n]*,([^,\n]+),", text, re.MULTILINE):
        if m.group(2) in out:
            out[m.group(2)] += float(m.group(1))
    hz = os.sysconf("SC_CLK_TCK")
    out["user_us"], out["sys_us"] = (u1 - u0) / hz * 1e6, (s1 - s0) / hz * 1e6
    out["voluntary cs"], out["involuntary cs"] = v1 - v0, i1 - i0
    out["units"] = units
    return out


def per_unit(small: dict[str, tuple[int, int]], big: dict[str, tuple[int, int]], units: int) -> dict[str, tuple[float, float]]:
    return {k: ((big.get(k, (0, 0))[0] - small.get(k, (0, 0))[0]) / units,
                (big.get(k, (0, 0))[1] - small.get(k, (0, 0))[1]) / units)
            for k in set(small) | set(big)}


def table(title: str, cols: dict[str, dict[str, tuple[float, float]]], perf: dict[str, dict[str, float]]) -> str:
    names = sorted({k for c in cols.values() for k, v in c.items() if abs(v[0]) >= 0.005},
                   key=lambda k: -max(c.get(k, (0, 0))[0] for c in cols.values()))
    head = f"{title}\n{'syscall':<18}" + "".join(f"{c:>24}" for c in cols) + "\n"
    rows = []
    for k in names:
        cells = []
        for c in cols.values():
            n, e = c.get(k, (0.0, 0.0))
            cells.append(f"{n:>10.2f}" + (f" ({e:.2f} err)" if e >= 0.005 else "").ljust(14))
        rows.append(f"{k:<18}" + "".join(cells))
    total = f"{'total (strace)':<18}" + "".join(f"{sum(v[0] for v in c.values()):>10.2f}{'':14}" for c in cols.values())
    extra = [f"{('total (perf)' if e == PERF_EVENTS[0] else e):<18}" + "".join(f"{perf[c][e]:>10.2f}{'':14}" for c in cols)
             for e in perf[next(iter(cols))]]
    return head + "\n".join(rows) + "\n" + total + "\n" + "\n".join(extra) + "\n"


def measure(pids: list[int], run: Callable[[int], int], a: int, b: int) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Per unit of work: strace counts (B run less A run) and perf's the same way. `run(n)` does
    the work of size n and returns how many units (transactions, requests) it made."""
    run(a)  # warm: pools filled, caches primed
    (small, ua), (big, ub) = strace_counts(pids, lambda: run(a)), strace_counts(pids, lambda: run(b))
    ps, pb = perf_counts(pids, lambda: run(a)), perf_counts(pids, lambda: run(b))
    return per_unit(small, big, ub - ua), {k: (pb[k] - ps[k]) / (pb["units"] - ps["units"]) for k in pb if k != "units"}


# -- db ------------------------------------------------------------------------------------------


def db(args: argparse.Namespace) -> None:
    from bench.pgpeers import start_pgbouncer
    from proxy.devstack.dbproxy import start_dbproxy
    from proxy.devstack.postgres import start_pg_cluster

    d = Path(tempfile.mkdtemp(prefix="sysc-db-"))
    cluster = start_pg_cluster(2, log_dir=d / "pg", name="sysc")
    closers = []
    try:
        env0 = dict(os.environ, PGPASSWORD=cluster.password)
        subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", cluster.primary.host, "-p", str(cluster.primary.port),
                        "-U", cluster.user, "postgres"], env=env0, check=True, capture_output=True)
        targets = {}
        for name in args.targets.split(","):
            if name == "tierproxy":
                p = start_dbproxy(cluster, log_dir=d, users={"app": "app-secret"}, workers=1)
                closers.append(p)
                targets[name] = (p.port, "app", "app-secret", [p.process.pid])
            elif name == "pgbouncer":
                b = start_pgbouncer(cluster, d, "/usr/sbin/pgbouncer", pool_size=args.clients)
                closers.append(b)
                targets[name] = (b.port, b.user, b.password, [b.process.pid])
        a, bb = (int(x) for x in args.transactions.split(","))
        for proto, workload in ((p, w) for w in args.workloads.split(",") for p in args.protocols.split(",")):
            flags = {"select-only": ["-S"], "tpcb": [], "orm": ["-f", str(d / "orm.sql")]}[workload]
            if workload == "orm" and not (d / "orm.sql").exists():
                from bench.dbproxy import _setup_orm
                _setup_orm("pgbench", cluster, d)
            cols, totals = {}, {}
            for name, (port, user, password, pids) in targets.items():
                def run(t: int, port: int = port, user: str = user, password: str = password,
                        flags: list[str] = flags, proto: str = proto) -> int:
                    r = subprocess.run(["pgbench", "-n", *flags, *(["-C"] if args.connect else []), "-M", proto, f"-c{args.clients}", "-j2", f"-t{t}",
                                        "-h", "127.0.0.1", "-p", str(port), "-U", user, "postgres"],
                                       env=dict(os.environ, PGPASSWORD=password), capture_output=True, text=True,
                                       check=False)
                    assert r.returncode == 0, r.stdout + r.stderr
                    return args.clients * t
                cols[name], totals[name] = measure(pids, run, a, bb)
            print(table(f"{workload} {proto}, pgbench{' -C' if args.connect else ''} -c{args.clients} -j2, syscalls per transaction "
                        f"(-t{bb} less -t{a})", cols, totals), flush=True)
    finally:
        for c in closers:
            c.close()
        cluster.close()
        shutil.rmtree(d, ignore_errors=True)


# -- lb ------------------------------------------------------------------------------------------


def _read_response(sock: socket.socket, buf: bytearray) -> None:
    """One response with a Content-Length off `sock` (what is left over stays in `buf`)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(buf[:end]))
            assert m and buf.startswith(b"HTTP/1.1 200"), bytes(buf[:200])
            need = end + 4 + int(m.group(1))
            while len(buf) < need:
                chunk = sock.recv(65536)
                assert chunk, "closed"
                buf += chunk
            del buf[:need]
            return
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk


def _wrk(port: int, seconds: int, connections: int, script: Path) -> int:
    """wrk for `seconds` with `script`; the requests it completed."""
    r = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, check=True)
    assert "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout, r.stdout
    return int(re.search(r"^\s+(\d+) requests in", r.stdout, re.MULTILINE).group(1))


def lb(args: argparse.Namespace) -> None:
    from bench import realistic
    from bench.common import write_wrk_script
    from bench.servers import Stack

    d = Path(tempfile.mkdtemp(prefix="sysc-lb-"))
    with Stack(d, "/usr/sbin/nginx", None) as stack, _removed(d):
        stack.realistic = True
        stack.start_backends()
        targets = {}
        for name in args.targets.split(","):
            t = stack.start_tierproxy() if name == "tierproxy" else stack.start_nginx_proxy()
            pids = _threads_and_children(t.processes[0].pid) if name == "nginx" else [t.processes[0].pid]
            if name == "nginx":  # the master only accepts signals: trace the worker
                pids = [p for p in pids if p != t.processes[0].pid]
            targets[name] = (t.port, pids)
        a, b = (int(x) for x in (args.wrk or args.requests).split(","))
        script = write_wrk_script(d, request_lua=realistic.wrk_lua())
        cols, totals = {}, {}
        for name, (port, pids) in targets.items():
            def run(n: int, port: int = port) -> int:
                if args.wrk:
                    return _wrk(port, n, args.connections, script)
                errors: list[BaseException] = []

                def client(i: int) -> None:
                    try:
                        with socket.create_connection(("127.0.0.1", port)) as s:
                            buf = bytearray()
                            for req in realistic.requests(n, f"127.0.0.1:{port}", start=1 + i * 100_000):
                                s.sendall(req)
                                _read_response(s, buf)
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        errors.append(exc)

                ts = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                assert not errors, errors
                return args.connections * n
            cols[name], totals[name] = measure(pids, run, a, b)
        how = (f"wrk -t1 -c{args.connections} with bench/realistic.py's script, -d{b}s less -d{a}s" if args.wrk else
               f"{args.connections} keep-alive connections, {b} less {a} requests each")
        print(table(f"lb, bench/realistic.py requests, syscalls per request ({how})", cols, totals), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("db")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--transactions", default="100,500", help="A,B per client")
    p.add_argument("--protocols", default="simple,extended")
    p.add_argument("--workloads", default="select-only", help="select-only, tpcb, orm (bench/ormsql.py)")
    p.add_argument("--connect", action="store_true", help="pgbench -C: a new connection (and login) per transaction")
    p.add_argument("--targets", default="tierproxy,pgbouncer")
    p = sub.add_parser("lb")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--requests", default="100,500", help="A,B per connection")
    p.add_argument("--wrk", metavar="A,B", help="load with wrk (bench/realistic.py's script) for A and B seconds instead")
    p.add_argument("--targets", default="tierproxy,nginx")
    args = ap.parse_args()
    {"db": db, "lb": lb}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
