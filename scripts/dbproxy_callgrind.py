"""Instructions (callgrind Ir) of the dbproxy process per pgbench transaction.

A throwaway primary (proxy.devstack), `pgbench -i -s 1` on it, a dbproxy under
`valgrind --tool=callgrind`, then `pgbench -b SCRIPT -cC -t N` through it for N = A, A, B with a dump
after each: (Ir(B) - Ir(A)) / (C * (B - A)) is the cost of one transaction, start-up and logins
cancelled out. Instruction counts do not depend on what else the machine runs, unlike the bench's
ratios, once the work that depends on the clock is kept out of the runs:

* the monitor polls every 30 s (the dev stack's 0.5 s poll, with a 0.5 s timeout, timed out
  under valgrind on a loaded machine and reconnected: a SCRAM login inside some runs only);
* PBKDF2 is not counted (its inclusive cost, by callgrind_annotate, is taken off each dump's
  total): a server connection the pool opens in one run and not another (its DISCARD ALL timed
  out, say) cost ~28M instructions of key derivation, +50-70k per transaction of a
  600-transaction run;
* `PYTHONHASHSEED=0` for the dbproxy (the same dict layouts each run).

`--replicas N` puts N streaming replicas behind the dbproxy (the bench runs two): reads then go
to them, through the router's replica choice. `--script` picks pgbench's built-in script: select-only (the default, `-S`) or tpcb-like
(pgbench's default: BEGIN, three UPDATEs, a SELECT, an INSERT, END, all on the primary).

Each figure is printed twice: the whole, and the whole less what the asyncio Tasks cost
(`task_step`'s inclusive cost in the same dumps): the transactions run no Task, but the daemon's
periodic work does (the status page's series every 2 s, the monitor), and how much of it lands in
a run depends on how long the run takes, so on the machine's load (docs/perf.md).

What is left varies by about +-1k per transaction between runs (more with -c4, where the clients'
batching varies; `--clients 1` is the steadiest). Run from a checkout:
`PYTHONPATH=$PWD python scripts/dbproxy_callgrind.py` (TIERPROXY_PURE=1 for the pure twins).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from proxy.devstack.dbproxy import dbproxy_config
from proxy.devstack.ports import allocate_port
from proxy.devstack.postgres import start_pg_cluster
from proxy.devstack.process import python_child_env

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog=__doc__.split("\n\n", 1)[1])
ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4, as the bench)")
ap.add_argument("--transactions", default="200,600", help="A,B: transactions per client of the short and long runs")
ap.add_argument("--protocols", default="simple,extended", help="pgbench -M values, comma-separated")
ap.add_argument("--replicas", type=int, default=0, help="streaming replicas behind the dbproxy (default 0: a primary alone)")
ap.add_argument("--script", default="select-only", choices=("select-only", "tpcb-like"),
                help="pgbench's built-in script (-b): select-only (default) or tpcb-like")
ap.add_argument("--rounds", type=int, default=1, help="measure each protocol this many times (each figure printed)")
ap.add_argument("--keep", action="store_true",
                help="keep the dumps and print the A and B runs' files (compare two trees per function: callgrind_annotate)")
args = ap.parse_args()
A, B = (int(x) for x in args.transactions.split(","))
d = Path(tempfile.mkdtemp(prefix="dbcg-"))
c = start_pg_cluster(args.replicas, log_dir=d, name="p")
proc = None
try:
    env0 = dict(os.environ, PGPASSWORD=c.password)
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", c.primary.host, "-p", str(c.primary.port), "-U", c.user, "postgres"],
                   env=env0, check=True, capture_output=True)
    pl, al = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    port = pl.port
    cfg = dbproxy_config(c, port=port, admin_port=al.port, users={"app": "app-secret"})
    cfg, n = re.subn(r"(?m)^interval = .*\ntimeout = .*$", "interval = 30\ntimeout = 30", cfg)
    assert n == 1, cfg
    (d / "d.toml").write_text(cfg)
    for x in (pl, al):
        getattr(x, "release", lambda: None)()
    out = d / "cg.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                             sys.executable, "-m", "proxy.cli", "dbproxy", "--config", str(d / "d.toml")],
                            env=dict(python_child_env(), PYTHONHASHSEED="0"), stdout=open(d / "d.log", "w"), stderr=subprocess.STDOUT)
    env = dict(os.environ, PGPASSWORD="app-secret")
    deadline = time.time() + 600
    while True:
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "postgres", "-Atc", "select 1"],
                           env=env, capture_output=True, text=True)
        if r.stdout.strip() == "1":
            break
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit(open(d / "d.log").read())
        time.sleep(0.5)

    def dump() -> tuple[int, int, str]:
        """Dump (callgrind zeroes its counters) and read the new file's total once it is complete,
        less what PBKDF2 (server logins) cost in it, and what the asyncio Tasks cost in it."""
        before = set(glob.glob(f"{out}.{proc.pid}*"))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        until = time.time() + 300
        while time.time() < until:
            for f in set(glob.glob(f"{out}.{proc.pid}*")) - before:
                m = re.search(r"^totals:\s*(\d+)", open(f).read(), re.M)
                if m:
                    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", f], capture_output=True, text=True).stdout
                    kdf = re.search(r"^\s*([\d,]+) .*:PKCS5_PBKDF2_HMAC\b", annotated, re.M)
                    tasks = [int(x.replace(",", "")) for x in re.findall(r"^\s*([\d,]+) .*:task_step \[", annotated, re.M)]
                    return int(m.group(1)) - (int(kdf.group(1).replace(",", "")) if kdf else 0), max(tasks, default=0), f
            time.sleep(0.2)
        raise SystemExit("callgrind wrote no dump")

    for _ in range(args.rounds):
        for proto in args.protocols.split(","):
            irs, tasks, files = {}, {}, {}
            for t in (A, A, B):
                dump()
                r = subprocess.run(["pgbench", "-n", "-b", args.script, f"-c{args.clients}", f"-j{min(args.clients, 2)}", f"-t{t}", "-M", proto,
                                    "-h", "127.0.0.1", "-p", str(port), "-U", "app", "postgres"], env=env, capture_output=True, text=True)
                assert r.returncode == 0 and ("number of failed transactions: 0" in r.stdout or "failed" not in r.stdout), r.stdout + r.stderr
                irs[t], tasks[t], files[t] = dump()
            per = args.clients * (B - A) * 1e3
            print(f"{args.script} {proto}: {(irs[B] - irs[A]) / per:.1f} k Ir per transaction, "
                  f"{(irs[B] - tasks[B] - irs[A] + tasks[A]) / per:.1f} k less the Tasks", flush=True)
            if args.keep:
                print(f"  dumps: A {files[A]} B {files[B]}", flush=True)
    # Where the statements went (after the last dump: the scrape is in no figure).
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{al.port}/metrics", timeout=60).read().decode()
    for line in metrics.splitlines():
        if line.startswith("tierproxy_dbproxy_statements_total"):
            print(" ", line, flush=True)
finally:
    if proc is not None:
        proc.terminate()
        proc.wait(30)
    c.close()
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
