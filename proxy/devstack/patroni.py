"""A real high-availability cluster for tests and the demo: one etcd member and Patroni nodes.

Theory of operation:
- `start_etcd()` runs Debian's `etcd` (v3.4) as one member on two locked loopback ports (client and
  peer), data in a temp dir, ready when its client port answers `GET /health` with `"health":
  "true"`. The v3 HTTP gateway (`/v3/kv/range`, `/v3/watch`) is what Patroni (its `etcd3` DCS) and
  proxy/dbproxy/patroni_source.py talk to; the v2 API is off in 3.4 and not needed.
- `start_patroni_cluster()` writes one config per node (JSON, which is YAML, so no YAML library is
  needed here) and runs Debian's `/usr/bin/patroni` for each. Patroni bootstraps the first node that
  takes the initialize key with initdb and clones the others with pg_basebackup (both without a
  disk sync, the backup with a fast checkpoint: the data is thrown away); every node owns a
  locked PostgreSQL port and a locked REST port on 127.0.0.1. PostgreSQL refuses to run as root, so
  Patroni (and the postgres it spawns) runs as the same unprivileged user as
  proxy/devstack/postgres.py, through `setpriv` (proxy.devstack.pgenv.as_user).
- Timings are short (ttl 10 s, loop_wait 1 s, retry_timeout 4 s: Patroni wants loop_wait +
  2*retry_timeout <= ttl) and `primary_start_timeout` is 0, so a crashed primary postmaster is
  failed over at once instead of being restarted in place for 5 minutes.
- Readiness and every wait ask Patroni's REST API (`/cluster`, `/health`), polled with a deadline;
  never a fixed sleep. Logs (etcd, each Patroni with its postgres output) stay in `log_dir` and are
  offered to the test harness through `managed_processes()`.
- `start()` first reaps postmasters left by an earlier run that was SIGKILLed (Patroni runs
  postgres in its own session, so the parent-death signal does not reach it); see reap_orphans.
- `close()` throws the cluster away fast: SIGKILL to every Patroni's process group, then PostgreSQL's
  immediate shutdown (SIGQUIT) to every postmaster of the cluster (it ends its children and removes
  its shared memory; SIGKILL if it lingers), then etcd, and releases the ports. The data directory
  is deleted right after, so Patroni's graceful stop (a fast shutdown and its checkpoint, the leader
  asking each replica whether it has the shutdown checkpoint, a switchover or demote in progress
  finished first) bought nothing and cost seconds per cluster. `PatroniNode.stop()` is the graceful
  stop of one node, for tests that restart it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from proxy.devstack.pgenv import as_user, chown_to, discard_dir, find_pg_bindir, pg_os_user
from proxy.devstack.poll import PollTimeout, wait_until
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import DevstackError, ManagedProcess

__all__ = [
    "EtcdServer",
    "PatroniCluster",
    "PatroniNode",
    "etcd_binary",
    "patroni_binary",
    "reap_orphans",
    "start_etcd",
    "start_patroni_cluster",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
HTTP_TIMEOUT = 2.0
STOP_TIMEOUT = 15.0

# Patroni's dynamic (DCS) settings, short for tests.
DCS_SETTINGS: dict[str, Any] = {
    "ttl": 10,
    "loop_wait": 1,
    "retry_timeout": 4,
    "maximum_lag_on_failover": 16 * 1024 * 1024,
    "primary_start_timeout": 0,
}
PG_PARAMETERS: dict[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "max_prepared_transactions": 10,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": "on",
    "wal_receiver_timeout": "5s",
    "wal_retrieve_retry_interval": "200ms",
    "fsync": "off",
    "full_page_writes": "on",
    "shared_buffers": "32MB",
    "jit": "off",
}


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def patroni_binary() -> str | None:
    return shutil.which("patroni")


def http_json(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or the text); HTTP errors are a status too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


# -- etcd ------------------------------------------------------------------------------------


class EtcdServer:
    """One etcd member on locked loopback ports; `.url` is its client URL."""

    def __init__(self, log_dir: Path | None = None, name: str = "etcd") -> None:
        binary = etcd_binary()
        if binary is None:
            raise DevstackError("etcd not found (Debian package etcd-server; scripts/dev.sh installs it)")
        self.base_dir = Path(tempfile.mkdtemp(prefix="tierproxy-etcd-"))
        self.log_dir = Path(log_dir) if log_dir is not None else self.base_dir
        self.client_lock = allocate_port(HOST)
        self.peer_lock = allocate_port(HOST)
        self.url = f"http://{HOST}:{self.client_lock.port}"
        peer = f"http://{HOST}:{self.peer_lock.port}"
        argv = [
            binary,
            "--name", "default",
            "--data-dir", str(self.base_dir / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        self.process = ManagedProcess(argv, name=name, log_dir=self.log_dir, cwd=self.base_dir)

    @property
    def port(self) -> int:
        return self.client_lock.port

    def healthy(self) -> bool:
        status, body = http_json("GET", f"{self.url}/health")
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> EtcdServer:
        self.process.wait_ready(self.healthy, timeout)
        return self

    def managed_processes(self) -> list[ManagedProcess]:
        return [self.process]

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.process.terminate(timeout)
        finally:
            self.client_lock.release()
            self.peer_lock.release()
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_etcd(log_dir: Path | None = None, timeout: float = READY_TIMEOUT) -> EtcdServer:
    server = EtcdServer(log_dir)
    try:
        return server.wait_ready(timeout)
    except BaseException:
        server.close()
        raise


# -- Patroni ---------------------------------------------------------------------------------


class PatroniNode:
    """One Patroni process and the PostgreSQL it manages."""

    def __init__(self, cluster: PatroniCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.pg_lock = allocate_port(HOST)
        self.api_lock = allocate_port(HOST)
        self.data_dir = cluster.base_dir / name / "data"
        self.config_path = cluster.base_dir / name / "patroni.yml"
        self.process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        return self.pg_lock.port

    @property
    def api_port(self) -> int:
        return self.api_lock.port

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def dsn(self, database: str = "postgres") -> str:
        c = self.cluster
        return f"postgresql://{c.superuser}:{c.password}@{HOST}:{self.port}/{database}"

    def config(self) -> dict[str, Any]:
        c = self.cluster
        node_dir = c.base_dir / self.name
        hba = [
            "local all all trust",
            f"host replication {c.replication_user} 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256",
        ]
        return {
            "scope": c.scope,
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{HOST}:{self.api_port}", "connect_address": f"{HOST}:{self.api_port}"},
            "etcd3": {"hosts": [f"{HOST}:{c.etcd.port}"]},
            "bootstrap": {
                "dcs": {
                    **DCS_SETTINGS,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": dict(c.pg_parameters)},
                },
                # "no-sync": initdb's --no-sync (Patroni forbids only "nosync"); the data is thrown
                # away, and syncing every new file cost about 2 s per cluster start.
                "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}, "no-sync"],
            },
            "postgresql": {
                "listen": f"{HOST}:{self.port}",
                "connect_address": f"{HOST}:{self.port}",
                "data_dir": str(self.data_dir),
                "bin_dir": str(c.bindir),
                "pgpass": str(node_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": c.superuser, "password": c.password},
                    "replication": {"username": c.replication_user, "password": c.password},
                    "rewind": {"username": c.superuser, "password": c.password},
                },
                "parameters": {"unix_socket_directories": str(node_dir)},
                "pg_hba": hba,
                # Replicas are cloned at once (an immediate checkpoint, not a spread one of up to
                # ~2 s) and not synced to disk: pg_basebackup --checkpoint=fast --no-sync.
                "basebackup": [{"checkpoint": "fast"}, "no-sync"],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def write_config(self) -> None:
        node_dir = self.config_path.parent
        node_dir.mkdir(parents=True, exist_ok=True)
        chown_to(node_dir, self.cluster.os_user)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        chown_to(self.config_path, self.cluster.os_user)

    def spawn(self) -> PatroniNode:
        if self.process is not None and self.process.running:
            raise DevstackError(f"{self.name} is already running")
        self.write_config()
        argv = as_user(self.cluster.os_user, [self.cluster.patroni, self.config_path], keep_pdeathsig=True)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # Debian's patroni runs on the system python3, not our venv
        self.process = ManagedProcess(
            argv, name=f"patroni-{self.name}", log_dir=self.cluster.log_dir, cwd=self.config_path.parent, env=env
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def get(self, path: str) -> tuple[int, Any]:
        return http_json("GET", f"{self.api_url}{path}")

    def psql(self, sql: str, timeout: float = 5.0) -> str:
        """One statement through psql (the server's own answer, not Patroni's); raises on failure."""
        env = dict(os.environ, PGPASSWORD=self.cluster.password, PGCONNECT_TIMEOUT="2")
        done = subprocess.run(
            [self.cluster.bindir / "psql", "-X", "-Atq", "-h", HOST, "-p", str(self.port),
             "-U", self.cluster.superuser, "-d", "postgres", "-c", sql],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise DevstackError(f"psql on {self.name}: {done.stderr.strip()}")
        return done.stdout.strip()

    def writable(self) -> bool:
        """The server itself says it is out of recovery (Patroni's /primary says 200 while promoting)."""
        try:
            return self.psql("select pg_is_in_recovery()") == "f"
        except (DevstackError, subprocess.TimeoutExpired):
            return False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill_postmaster(self) -> int | None:
        """SIGKILL this node's postmaster (a crash of PostgreSQL; Patroni itself keeps running)."""
        pid = self.postmaster_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def _postgres_pids(self) -> list[int]:
        """The postmaster and its children (backends, walsender, checkpointer...)."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return []
        pids = [pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry))
        return pids

    def freeze_postgres(self) -> None:
        """SIGSTOP this node's postmaster and every child of it (a frozen postmaster forks no
        new one): the server keeps its sockets and answers nothing."""
        pids = self._postgres_pids()
        if not pids:
            raise DevstackError(f"{self.name} has no postmaster to freeze")
        for pid in pids:
            _signal_quietly(pid, signal.SIGSTOP)

    def thaw_postgres(self) -> None:
        for pid in self._postgres_pids():
            _signal_quietly(pid, signal.SIGCONT)

    def walsender_pids(self) -> list[int]:
        """This node's walsenders (its postmaster's children streaming WAL to the replicas)."""
        out = []
        for pid in self._postgres_pids()[1:]:
            try:
                if b"walsender" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(pid)
            except OSError:
                continue
        return out

    def freeze(self) -> None:
        """SIGSTOP the whole node (Patroni and postgres: a frozen machine). Its leader key expires
        after the ttl; `thaw()` resumes both."""
        if self.process is not None:
            self.process.stop()
        self.freeze_postgres()

    def thaw(self) -> None:
        self.thaw_postgres()
        if self.process is not None:
            self.process.cont()

    def kill(self) -> None:
        """SIGKILL Patroni and its postgres (the whole node dies; its leader key expires after ttl)."""
        pid = self.postmaster_pid()
        if self.process is not None:
            self.process.kill()
        if pid is not None:
            _kill_quietly(pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM Patroni (it stops postgres first); SIGKILL whatever is left after `timeout`."""
        self.thaw_postgres()  # a frozen postgres cannot act on Patroni's SIGTERM
        if self.process is not None:
            self.process.terminate(timeout)
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            _kill_quietly(pid)

    def __repr__(self) -> str:
        return f"PatroniNode({self.name!r}, pg={self.port}, api={self.api_port}, running={self.running})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it holds no port.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cmdlines() -> dict[int, list[str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            found[int(entry)] = raw.decode("utf-8", "replace").split("\0")
    return found


def reap_orphans() -> list[int]:
    """SIGKILL postmasters of our clusters whose Patroni is gone; returns their pids.

    Patroni starts postgres in a session of its own, reparented to init, so the parent-death
    signal that takes Patroni down with a SIGKILLed test runner does not reach postgres. A node's
    postmaster runs with `-D <base>/<node>/data`; with no process running `<base>/<node>/patroni.yml`
    it is an orphan of an earlier run that never reached close().
    """
    procs = _cmdlines()
    configs = {arg for argv in procs.values() for arg in argv if arg.endswith("/patroni.yml")}
    killed = []
    for pid, argv in procs.items():
        if not argv or not argv[0].endswith("/postgres") or "-D" not in argv[:-1]:
            continue
        data = Path(argv[argv.index("-D") + 1])
        if data.name != "data" or not data.parent.parent.name.startswith("tierproxy-patroni-"):
            continue
        if str(data.parent / "patroni.yml") not in configs:
            _kill_quietly(pid)
            killed.append(pid)
    return killed


class PatroniCluster:
    """etcd + `size` Patroni nodes in one scope; see the module docstring."""

    def __init__(
        self,
        size: int = 3,
        *,
        scope: str = "tierproxy",
        log_dir: Path | None = None,
        etcd: EtcdServer | None = None,
        pg_parameters: Mapping[str, Any] | None = None,
        password: str = "patroni-secret",
    ) -> None:
        patroni = patroni_binary()
        if patroni is None:
            raise DevstackError("patroni not found (Debian package patroni; scripts/dev.sh installs it)")
        self.patroni = patroni
        self.bindir = find_pg_bindir()
        self.os_user = pg_os_user()
        self.scope = scope
        self.superuser = "postgres"
        self.replication_user = "replicator"
        self.password = password
        self.pg_parameters = {**PG_PARAMETERS, **(pg_parameters or {})}
        self.base_dir = Path(tempfile.mkdtemp(prefix="tierproxy-patroni-"))
        chown_to(self.base_dir, self.os_user)
        self.log_dir = Path(log_dir) if log_dir is not None else self.base_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._own_etcd = etcd is None
        self.etcd = etcd
        self.nodes: list[PatroniNode] = []
        self._size = size

    def start(self, timeout: float = READY_TIMEOUT) -> Self:
        reap_orphans()
        if self.etcd is None:
            self.etcd = start_etcd(self.log_dir)
        self.nodes = [PatroniNode(self, f"node{i + 1}") for i in range(self._size)]
        for node in self.nodes:
            node.spawn()
        self.wait_healthy(timeout)
        return self

    # -- REST --------------------------------------------------------------------------------

    def node(self, name: str) -> PatroniNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Ask the running nodes in turn; the first that answers at all wins."""
        last: Exception | None = None
        for node in self.nodes:
            if not node.running:
                continue
            try:
                return http_json(method, f"{node.api_url}{path}", body)
            except OSError as exc:
                last = exc
        raise DevstackError(f"no Patroni REST endpoint answered {method} {path}: {last!r}")

    def cluster(self) -> dict[str, Any]:
        """Patroni's `/cluster` JSON, from any node that answers."""
        status, body = self._request("GET", "/cluster")
        if status != 200 or not isinstance(body, dict):
            raise DevstackError(f"GET /cluster: {status} {body!r}")
        return body

    def leader_name(self) -> str | None:
        try:
            members = self.cluster().get("members", [])
        except (DevstackError, OSError):
            return None
        for member in members:
            if member.get("role") == "leader" and member.get("state") == "running":
                return str(member["name"])
        return None

    def _healthy_members(self, expected: int) -> bool:
        members = self.cluster().get("members", [])
        leaders = [m for m in members if m.get("role") == "leader" and m.get("state") == "running"]
        # Patroni 3.0.2 reports a streaming replica as "running" (later versions: "streaming").
        replicas = [m for m in members if m.get("role") in ("replica", "sync_standby")
                    and m.get("state") in ("running", "streaming") and m.get("lag") not in (None, "unknown")]  # fmt: skip
        return len(leaders) == 1 and len(replicas) >= expected - 1

    def wait_healthy(self, timeout: float = READY_TIMEOUT, members: int | None = None) -> None:
        """Until one running leader and every other running node streams."""
        expected = members if members is not None else sum(1 for n in self.nodes if n.running)
        self._wait(lambda: self._healthy_members(expected), timeout, f"{expected} healthy Patroni members")

    def wait_leader(self, timeout: float = READY_TIMEOUT, *, not_name: str | None = None) -> str:
        """The leader's name once Patroni names one (other than `not_name`, if given) and its
        PostgreSQL answers that it is out of recovery."""

        def probe() -> str | None:
            name = self.leader_name()
            if name is None or name == not_name:
                return None
            return name if self.node(name).writable() else None

        return self._wait(probe, timeout, "a Patroni leader" + (f" other than {not_name}" if not_name else ""))

    def leader(self, timeout: float = READY_TIMEOUT) -> PatroniNode:
        return self.node(self.wait_leader(timeout))

    def replicas(self) -> list[PatroniNode]:
        leader = self.leader_name()
        return [n for n in self.nodes if n.running and n.name != leader]

    def switchover(self, to: str | None = None, timeout: float = READY_TIMEOUT) -> str:
        """POST /switchover from the current leader (to `to`, or Patroni's choice); returns the new leader."""
        old = self.wait_leader(timeout)
        body: dict[str, Any] = {"leader": old}
        if to is not None:
            body["candidate"] = to
        status, answer = http_json("POST", f"{self.node(old).api_url}/switchover", body, timeout=30.0)
        if status != 200:
            raise DevstackError(f"POST /switchover {body}: {status} {answer!r}")
        new = self.wait_leader(timeout, not_name=old)
        if to is not None and new != to:
            raise DevstackError(f"switchover to {to} made {new} the leader")
        return new

    def kill_leader_postmaster(self, timeout: float = READY_TIMEOUT) -> tuple[str, str]:
        """SIGKILL the leader's postmaster and wait for Patroni to fail over; (old, new) leader."""
        old = self.wait_leader(timeout)
        if self.node(old).kill_postmaster() is None:
            raise DevstackError(f"{old} has no postmaster to kill")
        return old, self.wait_leader(timeout, not_name=old)

    def kill_leader_node(self, timeout: float = READY_TIMEOUT) -> tuple[str, str]:
        """SIGKILL the leader's Patroni and postgres together (a dead machine): its leader key
        stays until the ttl expires, then another node is promoted. Returns (old, new) leader;
        `restart_node(old)` brings the dead one back (as a replica)."""
        old = self.wait_leader(timeout)
        self.node(old).kill()
        return old, self.wait_leader(timeout, not_name=old)

    def restart_node(self, name: str, timeout: float = READY_TIMEOUT) -> None:
        """Start a stopped or killed node again and wait until every node is healthy."""
        self.node(name).spawn()
        self.wait_healthy(timeout, members=len(self.nodes))

    def set_synchronous_mode(self, on: bool, timeout: float = READY_TIMEOUT) -> None:
        """PATCH /config synchronous_mode; waits until /cluster shows a sync standby (on) or none (off)."""
        self._patch_config({"synchronous_mode": on}, timeout)

        def applied() -> bool:
            roles = [m.get("role") for m in self.cluster().get("members", [])]
            return ("sync_standby" in roles) == on

        self._wait(applied, timeout, f"synchronous_mode {'on' if on else 'off'} in /cluster")

    def sync_standby(self) -> str | None:
        """The member Patroni's /sync key names synchronous standby of the running leader (what
        /cluster shows as role sync_standby), or None."""
        try:
            members = self.cluster().get("members", [])
        except (DevstackError, OSError):
            return None
        for member in members:
            if member.get("role") == "sync_standby" and member.get("state") in ("running", "streaming"):
                return str(member["name"])
        return None

    def wait_synchronous(self, timeout: float = READY_TIMEOUT) -> str:
        """Until a running leader has a synchronous standby registered in the /sync key; returns
        its name. In synchronous mode Patroni fails over only to the member /sync names: a leader
        killed before it registered one (seconds after every failover or switchover, and after
        synchronous_mode is turned on) is restarted in place, not failed over (seen with 3.0.2)."""
        return self._wait(lambda: self.leader_name() and self.sync_standby(), timeout,
                          "a synchronous standby in /sync")  # fmt: skip

    def set_config(self, settings: Mapping[str, Any]) -> None:
        """PATCH /config: Patroni's dynamic settings (e.g. failsafe_mode), applied by every node
        at its next loop."""
        self._patch_config(settings, READY_TIMEOUT)

    def _patch_config(self, settings: Mapping[str, Any], timeout: float) -> None:
        """PATCH /config until Patroni takes it. Patroni answers 409 when its compare-and-set of
        the config key in the DCS fails (another writer, or etcd too slow to answer in time on a
        loaded machine, seen in the suite): the change was not made, so it is sent again."""
        body = dict(settings)
        refused: list[tuple[int, Any]] = []

        def taken() -> bool:
            status, answer = self._request("PATCH", "/config", body)
            if status == 200:
                return True
            if status != 409:
                raise DevstackError(f"PATCH /config {body}: {status} {answer!r}")
            refused.append((status, answer))
            return False

        self._wait(taken, timeout, f"PATCH /config {body} taken (409 answers: {len(refused)})")

    def _wait(self, probe: Any, timeout: float, what: str) -> Any:
        try:
            return wait_until(probe, timeout, what)
        except PollTimeout as exc:
            tails = "\n".join(f"--- {p.name}:\n{p.log_tail(15)}" for p in self.managed_processes())
            raise DevstackError(f"{exc}\n{tails}") from exc

    # -- lifecycle ---------------------------------------------------------------------------

    def managed_processes(self) -> list[ManagedProcess]:
        procs = [n.process for n in self.nodes if n.process is not None]
        if self.etcd is not None:
            procs.append(self.etcd.process)
        return procs

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Kill every Patroni, shut every postmaster down immediately, then etcd (see the module
        docstring); always releases every port and deletes the data. Idempotent."""
        try:
            for node in self.nodes:
                if node.process is not None:
                    node.process.kill()  # SIGKILL to the group (stopped ones too), reaped: nothing restarts postgres
            postmasters = self._postmasters()
            for pid in postmasters:
                _signal_quietly(pid, signal.SIGCONT)  # a frozen postmaster cannot act on SIGQUIT
                _signal_quietly(pid, signal.SIGQUIT)
            try:
                wait_until(lambda: not any(_alive(pid) for pid in postmasters), timeout, "the postmasters' exit")
            except PollTimeout:
                for pid in postmasters:
                    _kill_quietly(pid)
        finally:
            for node in self.nodes:
                node.pg_lock.release()
                node.api_lock.release()
            if self._own_etcd and self.etcd is not None:
                self.etcd.close()
            discard_dir(self.base_dir)  # at once; its files are unlinked in the background

    def _postmasters(self) -> list[int]:
        """Every running postmaster with its data directory in this cluster (the pid files can
        be missing or stale while Patroni restarts a node: the command lines are not)."""
        base = str(self.base_dir) + os.sep
        found = []
        for pid, argv in _cmdlines().items():
            if argv and argv[0].endswith("/postgres") and "-D" in argv[:-1]:
                if argv[argv.index("-D") + 1].startswith(base) and _alive(pid):
                    found.append(pid)
        return found

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatroniCluster({self.scope!r}, nodes={self.nodes!r})"


def start_patroni_cluster(size: int = 3, **kwargs: Any) -> PatroniCluster:
    """etcd plus `size` Patroni nodes, returned once a leader runs and every replica streams."""
    timeout = kwargs.pop("timeout", READY_TIMEOUT)
    cluster = PatroniCluster(size, **kwargs)
    try:
        return cluster.start(timeout)
    except BaseException:
        cluster.close()
        raise
