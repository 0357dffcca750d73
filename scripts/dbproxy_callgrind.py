"""Instructions (callgrind Ir) of the dbproxy process per pgbench select-only transaction.

A throwaway primary (proxy.devstack), `pgbench -i -s 1` on it, a dbproxy under
`valgrind --tool=callgrind`, then `pgbench -S -c4 -t N` through it for N = A, A, B with a dump
after each: (Ir(B) - Ir(A)) / (4 * (B - A)) is the cost of one transaction, start-up and logins
cancelled out. Instruction counts do not depend on what else the machine runs, unlike the bench's
ratios. Run from a checkout: `PYTHONPATH=$PWD python scripts/dbproxy_callgrind.py`
(TIERPROXY_PURE=1 for the pure twins).
"""
import os, re, subprocess, sys, tempfile, time, glob
from pathlib import Path
from proxy.devstack.postgres import start_pg_cluster
from proxy.devstack.dbproxy import dbproxy_config
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import python_child_env
A, B = 200, 600
d = Path(tempfile.mkdtemp(prefix="dbcg-"))
c = start_pg_cluster(0, log_dir=d, name="p")
proc = None
try:
    env0 = dict(os.environ, PGPASSWORD=c.password)
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", c.primary.host, "-p", str(c.primary.port), "-U", c.user, "postgres"], env=env0, check=True, capture_output=True)
    pl, al = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    port = pl.port
    cfg = dbproxy_config(c, port=port, admin_port=al.port, users={"app": "app-secret"})
    (d / "d.toml").write_text(cfg)
    for x in (pl, al):
        getattr(x, "release", lambda: None)()
    out = d / "cg.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable, "-m", "proxy.cli", "dbproxy",
                             "--config", str(d / "d.toml")], env=python_child_env(), stdout=open(d/"d.log","w"), stderr=subprocess.STDOUT)
    env = dict(os.environ, PGPASSWORD="app-secret")
    deadline = time.time() + 180
    while True:
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "postgres", "-Atc", "select 1"], env=env, capture_output=True, text=True)
        if r.stdout.strip() == "1": break
        if time.time() > deadline: raise SystemExit(open(d/"d.log").read())
        time.sleep(0.5)
    def dump():
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        time.sleep(0.5)
        files = sorted(glob.glob(f"{out}.{proc.pid}*"), key=os.path.getmtime)
        txt = open(files[-1]).read()
        m = re.search(r"^summary:\s*(\d+)", txt, re.M) or re.search(r"^totals:\s*(\d+)", txt, re.M)
        return int(m.group(1))
    for proto in ("simple", "extended"):
        irs = {}
        for t in (A, A, B):
            dump()
            r = subprocess.run(["pgbench", "-n", "-S", "-c4", "-j2", f"-t{t}", "-M", proto, "-h", "127.0.0.1", "-p", str(port), "-U", "app", "postgres"],
                               env=env, capture_output=True, text=True)
            assert "number of failed transactions: 0" in r.stdout or "failed" not in r.stdout, r.stdout + r.stderr
            irs[t] = dump()
        print(f"select-only {proto}: {(irs[B]-irs[A])/(4*(B-A))/1e3:.1f} k Ir per transaction", flush=True)
finally:
    if proc is not None:
        proc.terminate(); proc.wait(30)
    c.close()
