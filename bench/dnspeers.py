"""The DNS servers of the geodns benchmark: tierproxy geodns, dnsmasq and PowerDNS (GeoIP backend).

All three serve the same zone, `geo.test.` (SOA, NS ns1, ns1's A record), with `www` and `n0`..`nK`
as the names under test. The geo-aware ones place a client in a region and answer with that
region's data center:

    client network                 region  answer
    127.0.0.0/8 (the source)        east    192.0.2.10
    203.0.113.0/24 (ECS)            west    198.51.100.10
    anything else                   east    192.0.2.10

* tierproxy geodns: policy `geo` per name (each region's data center first, the other as fallback),
  regions from its CIDR table (or, with `--regions mmdb`, from PowerDNS's .mmdb), both data centers with a TCP health target: a listener of the bench
  process (a thread that accepts and closes), up before the server starts, so the checks run and
  cost what they cost and never fail (its own admin port would fail the first check, which runs
  before the admin server is up, and leave both data centers down, answered fail-open);
* PowerDNS 4.7 with the GeoIP backend: one `services` entry per name, `%co.<name>`, looked up in a
  tiny .mmdb this module writes (bench/mmdb.py) mapping the same networks to the countries XE and
  XW, `edns-subnet-processing=yes` so ECS is honoured; PowerDNS's own packet cache stays on (default);
* dnsmasq: authoritative for the zone (`auth-zone`, `auth-server`), one `host-record` per name with
  the east address. It has no geo policies and ignores ECS: it is the "plain fast server" baseline.

Each server gets its config in the run's temp dir and a port from `allocate_port` that is free for
UDP too; it is ready when a real DNS query to it is answered (dnspython), never after a fixed sleep.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode

from bench.mmdb import write_country_mmdb
from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.process import ManagedProcess, python_child_env

__all__ = ["EAST", "ECS_NET", "WEST", "ZONE", "DnsServer", "DnsStack", "query_a", "tierproxy_geodns_missing"]

HOST = "127.0.0.1"
ZONE = "geo.test"
EAST, WEST = "192.0.2.10", "198.51.100.10"
SOURCE_NET, ECS_NET = "127.0.0.0/8", "203.0.113.0/24"
TTL = 60
READY_TIMEOUT = 20.0


@dataclass
class DnsServer:
    name: str
    description: str
    port: int
    process: ManagedProcess
    configs: list[Path] = field(default_factory=list)
    geo: bool = True  # answers by region (dnsmasq does not)

    @property
    def pids(self) -> list[int]:
        return [self.process.pid]

    def alive(self) -> bool:
        return self.process.running


def names(count: int) -> list[str]:
    """The names under test, relative to ZONE: `www` and `n0`..`n<count-1>`."""
    return ["www", *(f"n{i}" for i in range(count))]


def query_a(port: int, name: str, ecs: str | None = None, timeout: float = 1.0) -> tuple[int, list[str]]:
    """(rcode, A addresses) of one UDP query to HOST:port, optionally with an ECS option."""
    options = [dns.edns.ECSOption.from_text(ecs)] if ecs else None
    query = dns.message.make_query(f"{name}.{ZONE}.", "A", use_edns=0 if ecs else None, options=options)
    reply = dns.query.udp(query, HOST, port=port, timeout=timeout)
    return reply.rcode(), sorted(rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == 1)


def tierproxy_geodns_missing() -> str | None:
    """Why the tierproxy target cannot run in this checkout, or None when it can."""
    if importlib.util.find_spec("proxy.geodns") is None:
        return "tierproxy geodns: proxy.geodns is not in this checkout yet (issue 15)"
    from proxy.cli import DAEMONS

    if "geodns" not in DAEMONS:
        return "tierproxy geodns: `tierproxy geodns` is not a command of proxy.cli yet (issue 15)"
    return None


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _tierproxy_toml(port: int, admin: int, health_port: int, labels: list[str], workers: int = 1,
                    mmdb: Path | None = None) -> str:  # fmt: skip
    health = f'health = [{{ type = "tcp", address = "{HOST}:{health_port}" }}]'
    if mmdb is None:
        regions = f'networks = {{ "{SOURCE_NET}" = "east", "{ECS_NET}" = "west" }}'
    else:  # the database PowerDNS reads; a CIDR table would win over it, so there is none
        regions = (f'mmdb = "{mmdb}"\nmmdb_field = "country.iso_code"\n'
                   'mmdb_regions = { XE = "east", XW = "west" }')  # fmt: skip
    head = f"""# Written by bench/dnspeers.py: geo policy per name, ECS honoured, health checks on.
listen = "{HOST}:{port}"
admin = {{ address = "{HOST}:{admin}" }}
log_level = "warning"
workers = {workers}

[regions]
{regions}
default = "east"

[datacenters.east]
addresses = ["{EAST}"]
{health}

[datacenters.west]
addresses = ["{WEST}"]
{health}

[[zones]]
origin = "{ZONE}."
ttl = {TTL}
soa = {{ mname = "ns1.{ZONE}.", rname = "hostmaster.{ZONE}.", minimum = {TTL} }}
ns = ["ns1.{ZONE}."]
records = [{{ name = "ns1", type = "A", value = "{HOST}" }}]
"""
    regions = ('regions = { east = { datacenters = ["east", "west"] }, '
               'west = { datacenters = ["west", "east"] } }')  # fmt: skip
    body = "".join(f'\n[[zones.names]]\nname = "{label}"\npolicy = "geo"\nttl = {TTL}\n'
                   f'datacenters = ["east", "west"]\n{regions}\n' for label in labels)  # fmt: skip
    return head + body


def _pdns_zone_yaml(labels: list[str]) -> str:
    lines = ["domains:", f"- domain: {ZONE}", f"  ttl: {TTL}", "  records:",
             f"    {ZONE}:", f"      - soa: ns1.{ZONE} hostmaster.{ZONE} 1 7200 3600 86400 {TTL}",
             f"      - ns: ns1.{ZONE}", f"    ns1.{ZONE}:", f"      - a: {HOST}"]  # fmt: skip
    for label in labels:
        # %co is the lower-cased ISO code of the client's country in bench/mmdb.py's database.
        for country, address in (("xe", EAST), ("xw", WEST), ("unknown", EAST)):
            lines += [f"    {country}.{label}.{ZONE}:", f"      - a: {address}"]
    lines.append("  services:")
    lines += [f"    {label}.{ZONE}: '%co.{label}.{ZONE}'" for label in labels]
    return "\n".join(lines) + "\n"


def _dnsmasq_conf(port: int, labels: list[str]) -> str:
    lines = ["# Written by bench/dnspeers.py: authoritative for the zone, no upstream, no hosts file.",
             f"port={port}", f"listen-address={HOST}", "bind-interfaces", "no-resolv", "no-hosts",
             "pid-file=", f"auth-server=ns1.{ZONE},{HOST}", f"auth-zone={ZONE}", f"auth-ttl={TTL}",
             f"local-ttl={TTL}"]  # fmt: skip
    lines += [f"host-record={label}.{ZONE},{EAST}" for label in labels]
    return "\n".join(lines) + "\n"


class _TcpHealthTarget:
    """A loopback TCP port that accepts and closes every connection, in a thread of its own."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server((HOST, port))
        self.sock.settimeout(0.2)  # so close() is noticed without a connection arriving
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bench-health-target", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class DnsStack:
    """Starts DNS servers into `workdir` and stops them all (and frees their ports) on close()."""

    def __init__(self, workdir: Path, name_count: int) -> None:
        self.workdir = workdir
        self.labels = names(name_count)
        self._locks: list[PortLock] = []
        self._processes: list[ManagedProcess] = []
        self._health: _TcpHealthTarget | None = None

    def _port(self) -> int:
        for _ in range(50):
            lock = allocate_port(HOST)
            if _udp_free(lock.port):
                self._locks.append(lock)
                return lock.port
            lock.release()
        raise OSError("no port free for both TCP and UDP on 127.0.0.1")

    def _spawn(self, argv: list[str], name: str, port: int, **kw: object) -> ManagedProcess:
        proc = ManagedProcess(argv, name=name, log_dir=self.workdir / "logs", **kw)  # type: ignore[arg-type]
        self._processes.append(proc)

        def answered() -> bool:
            return query_a(port, "www", timeout=0.5)[0] == dns.rcode.NOERROR

        proc.wait_ready(answered, timeout=READY_TIMEOUT)
        return proc

    def _mmdb(self) -> Path:
        path = self.workdir / "countries.mmdb"
        if not path.exists():
            write_country_mmdb(path, {SOURCE_NET: "XE", ECS_NET: "XW"})
        return path

    def start_tierproxy(self, workers: int = 1, regions: str = "cidr") -> DnsServer:
        """`regions`: "cidr" (its CIDR table) or "mmdb" (the .mmdb PowerDNS reads)."""
        port, admin = self._port(), self._port()
        if self._health is None:
            self._health = _TcpHealthTarget(self._port())
        conf = self.workdir / "geodns.toml"
        conf.write_text(_tierproxy_toml(port, admin, self._health.sock.getsockname()[1], self.labels,
                                        workers, self._mmdb() if regions == "mmdb" else None))
        argv = [sys.executable, "-m", "proxy.cli", "geodns", "--config", str(conf)]
        proc = self._spawn(argv, "tierproxy-geodns", port, env=python_child_env())
        return DnsServer("tierproxy", f"tierproxy geodns, {workers} worker(s): geo policy per name, "
                         f"{'CIDR table' if regions == 'cidr' else '.mmdb'} regions, ECS, "
                         "TCP health checks on both data centers", port, proc, [conf])  # fmt: skip

    def start_dnsmasq(self, binary: str) -> DnsServer:
        port = self._port()
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text(_dnsmasq_conf(port, self.labels))
        proc = self._spawn([binary, "-k", f"--conf-file={conf}"], "dnsmasq", port)
        return DnsServer("dnsmasq", "dnsmasq, authoritative zone, host-record per name (no geo, ECS ignored)",
                         port, proc, [conf], geo=False)  # fmt: skip

    def start_pdns(self, binary: str) -> DnsServer:
        port = self._port()
        root = self.workdir / "pdns"
        root.mkdir(exist_ok=True)
        (root / "pdns.conf").write_text("# Written by bench/dnspeers.py: everything is on the command line.\n")
        zones, mmdb = root / "zones.yaml", self._mmdb()
        zones.write_text(_pdns_zone_yaml(self.labels))
        argv = [binary, f"--config-dir={root}", f"--socket-dir={root}", "--daemon=no", "--guardian=no",
                "--disable-syslog", "--write-pid=no", "--security-poll-suffix=", f"--local-address={HOST}",
                f"--local-port={port}", "--launch=geoip", f"--geoip-zones-file={zones}",
                f"--geoip-database-files=mmdb:{mmdb}", "--edns-subnet-processing=yes"]  # fmt: skip
        proc = self._spawn(argv, "pdns", port)
        return DnsServer("powerdns", "PowerDNS 4 GeoIP backend: %co service per name, a .mmdb of the same "
                         "networks, ECS on, packet cache on (default)", port, proc, [root / "pdns.conf", zones])  # fmt: skip

    def close(self) -> None:
        for proc in self._processes:
            proc.send_terminate()
        for proc in self._processes:
            proc.terminate()
        if self._health is not None:
            self._health.close()
        for lock in self._locks:
            lock.release()

    def __enter__(self) -> DnsStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
