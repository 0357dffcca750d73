"""What `python -m bench lb --tls` and `--h2` add to the plain benchmark: a test certificate, the
peers' TLS listener config text, an HTTPS readiness probe, and h2load (nghttp2-client).

Every proxy terminates TLS with the same self-signed certificate (EC P-256, made with openssl per
run) and offers ALPN h2 and http/1.1 on the same port, so one config per peer serves both modes:
`--tls` loads it with wrk over https (HTTP/1.1, keep-alive; wrk sends no ALPN), `--h2` with h2load
(`-c` connections, `-m` concurrent streams each). The backends stay plain HTTP/1.1 keep-alive.

nginx spells HTTP/2 `listen ... ssl http2` before 1.25.1 and `http2 on;` from it; HAProxy takes
`bind ... ssl crt <pem with cert and key> alpn h2,http/1.1`; tierproxy an https `[[listeners]]`
entry with `http2 = true`.

h2load prints no latency percentiles (only min/max/mean), so an h2 run's p50/p99 are left empty and
its mean is kept in the JSON; its counts map onto the same result record as wrk's.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.common import WrkResult, _ms, run_timed

__all__ = ["H2loadResult", "TlsFiles", "haproxy_bind", "https_probe", "make_cert", "nginx_http2_on",
           "nginx_listen", "parse_h2load", "run_h2load", "tierproxy_listener"]  # fmt: skip

SERVER_NAME = "bench.test"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    pem: Path  # cert then key, in one file (HAProxy's `crt`)


def make_cert(directory: Path) -> TlsFiles:
    """A self-signed EC certificate for bench.test and 127.0.0.1, valid 2 days."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "bench.crt", directory / "bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", f"/CN={SERVER_NAME}",
                    "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    pem = directory / "bench.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return TlsFiles(cert, key, pem)


def https_probe(host: str, port: int, cafile: Path, path: str = "/") -> object:
    """Ready when an HTTPS GET (certificate checked against the bench's own) answers 200."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False  # the bench dials 127.0.0.1; the chain is still verified

    def probe() -> bool:
        with urllib.request.urlopen(f"https://{host}:{port}{path}", timeout=1.0, context=ctx) as r:
            r.read()
            return r.status == 200

    return probe


def nginx_http2_on(nginx: str) -> bool:
    """True when this nginx wants `http2 on;` (1.25.1 and later) instead of `listen ... http2`."""
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return m is not None and tuple(map(int, m.groups())) >= (1, 25, 1)


@dataclass
class H2loadResult(WrkResult):
    mean_ms: float | None = None
    streams: int = 0


def parse_h2load(text: str, url: str = "", client_cpu_s: float = 0.0, wall_s: float = 0.0,
                 returncode: int = 0, streams: int = 0) -> H2loadResult:  # fmt: skip
    """h2load's report: 'finished in', the requests line, status codes, time for request."""
    fin = re.search(r"^finished in ([\d.]+\w+), ([\d.]+) req/s", text, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text, re.M)  # fmt: skip
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    lat = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if fin is None or req is None or codes is None:
        raise ValueError(f"h2load output has no result (exit {returncode}):\n{text[-2000:]}")
    done, failed, errored, timeouts = (int(req.group(i)) for i in (3, 5, 6, 7))
    started = int(req.group(2))
    return H2loadResult(
        url=url, duration_s=_ms(fin.group(1)) / 1e3, requests=done,
        requests_per_s=float(fin.group(2)),
        p50_ms=None, p75_ms=None, p90_ms=None, p95_ms=None, p99_ms=None,
        max_ms=_ms(lat.group(2)) if lat else None,
        non_2xx_3xx=int(codes.group(3)) + int(codes.group(4)),
        # h2load's "failed" includes errored and timed-out ones; what was started and never done
        # at the end of a timed run is not an error.
        socket_errors={"connect": 0, "read": errored, "write": 0, "timeout": timeouts,
                       "failed": max(0, failed - errored - timeouts)},
        client_cpu_s=client_cpu_s, wall_s=wall_s, returncode=returncode, text=text,
        mean_ms=_ms(lat.group(3)) if lat else None, streams=streams or started - done,
    )


def run_h2load(h2load: str, url: str, *, duration: float, connections: int, streams: int,
               threads: int = 1, timeout_s: float = 5.0) -> H2loadResult:
    """One timed h2load run over h2 (ALPN), with h2load's own CPU time like run_wrk."""
    argv = [h2load, f"-t{threads}", f"-c{connections}", f"-m{streams}", f"-D{duration:g}",
            f"-T{timeout_s:g}", "--npn-list=h2", url]  # 1.52 names the ALPN list --npn-list
    proc, wall, cpu = run_timed(argv, duration + 60)
    return parse_h2load(proc.stdout + proc.stderr, url, cpu, wall, proc.returncode, streams)


# -- peer config text -------------------------------------------------------------------------


def nginx_listen(host: str, port: int, tls: TlsFiles, http2_on: bool) -> str:
    """The lines of an nginx `server` block that make it an HTTPS + h2 listener."""
    listen = f"        listen {host}:{port} ssl{'' if http2_on else ' http2'} backlog=1024;\n"
    return (listen + ("        http2 on;\n" if http2_on else "")
            + f"        ssl_certificate {tls.cert};\n        ssl_certificate_key {tls.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n")


def haproxy_bind(host: str, port: int, tls: TlsFiles) -> str:
    return f"{host}:{port} ssl crt {tls.pem} alpn h2,http/1.1"


def tierproxy_listener(host: str, port: int, tls: TlsFiles) -> str:
    return (f'[[listeners]]\nname = "bench"\naddress = "{host}:{port}"\nprotocol = "https"\nhttp2 = true\n'
            f'[listeners.tls]\ncertificates = [{{ cert_file = "{tls.cert}", key_file = "{tls.key}" }}]\n\n')
