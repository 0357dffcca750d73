"""Per-request cost of the Python fast paths, measured load-independently with callgrind.

Timings on this shared 2-core machine move with whatever else runs; instruction counts do not.
`python -m bench.micro run WHAT N` feeds N items through one path in-process, with no sockets:

* `lb-realistic` / `lb-bare`: whole exchanges through `ClientConn.data_received(request)` and
  `UpstreamConn.data_received(response)` with do-nothing transports (one client connection, one
  idle backend connection reused), requests from bench/realistic.py (browser-like header sets,
  every request line distinct) or wrk's bare `GET /?r=N`; responses of varying heads and sizes.
* `parse-realistic`: the request recogniser alone (`RequestParser.feed_simple`, else `feed`) plus
  the head for the backend (`Frontend.upstream_head`): what a request costs before any I/O.
* `classify-orm` / `classify-pgbench`: `ClassifierCache.get_bytes` over the statements of
  `bench dbproxy --workloads orm` (bench/ormsql.py) or pgbench's select-only, each distinct.

`python -m bench.micro callgrind WHAT` runs `run WHAT 1000` and `run WHAT 3000` under
`valgrind --tool=callgrind` and prints (instructions(3000) - instructions(1000)) / 2000: start-up
and imports cancel out, so the figure is the cost of one item, repeatable to about 1%.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import ormsql, realistic

__all__ = ["main"]

# Inputs are generated for this many items whatever N is (then cut to N), so their making cancels
# out of the difference between two runs like the imports do.
GENERATED = 3000
WHATS = ("lb-realistic", "lb-bare", "lb-h2", "parse-realistic", "classify-orm", "classify-pgbench")
LB_TOML = """
listen = "127.0.0.1:1"
[admin]
address = "127.0.0.1:2"
[pools.p]
[pools.p.health]
type = "none"
[[pools.p.backends]]
name = "b1"
address = "127.0.0.1:3"
"""


class _Sink:
    """A transport that keeps nothing: the driver measures Python's work, not the kernel's."""

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def _responses(paths: list[bytes]) -> list[bytes]:
    return [realistic.response_for(p) for p in paths]


async def _lb(what: str, n: int) -> int:
    import tomllib

    from proxy.lb.client import ClientConn
    from proxy.lb.config import LbConfig
    from proxy.lb.frontend import Frontend
    from proxy.lb.pool import Pool
    from proxy.upstream.conn import UpstreamConn

    cfg = LbConfig.model_validate(tomllib.loads(LB_TOML))
    pools = {name: Pool(name, pcfg, lambda b: None, lambda b: None) for name, pcfg in cfg.pools.items()}
    fe = Frontend(cfg, pools)
    m = max(n, GENERATED)
    if what == "lb-bare":
        reqs = [b"GET /?r=%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" % i for i in range(m)]
    else:
        reqs = realistic.requests(m)
    resps = _responses([r.split(b" ", 2)[1] for r in reqs])
    every_req = reqs
    reqs, resps = reqs[:n], resps[:n]
    backend = next(iter(pools["p"].backends.values()))
    up = UpstreamConn(backend, cfg.limits.max_header_bytes)
    up.connection_made(_Sink())  # type: ignore[arg-type]
    backend.idle.append(up)
    if what == "lb-h2":
        return await _h2(fe, up, every_req, resps)
    conn = ClientConn(fe)
    conn.connection_made(_Sink())  # type: ignore[arg-type]
    for req, resp in zip(reqs, resps):
        conn.data_received(req)
        up.data_received(resp)
    assert not conn.closed and fe.requests_total == n and list(backend.idle) == [up], "exchange failed"
    return n


async def _h2(fe: Any, up: Any, reqs: list[bytes], resps: list[bytes]) -> int:
    """`reqs`: all GENERATED requests (their encoding cancels out); `resps`: the first N answers."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    from proxy.lb.client import ClientConn
    from proxy.lb.h2front import H2Conn

    from h2.settings import SettingCodes, Settings

    # The client's bytes for all `m` requests, encoded in order as h2load would send them, with
    # h2load's windows (-w 30 -W 30: 2^30 - 1), so no WINDOW_UPDATE is needed on the way.
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.local_settings = Settings(client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 2**30 - 1})
    client.initiate_connection()
    client.increment_flow_control_window(2**30 - 1 - 65535)
    preface = client.data_to_send()
    frames = []
    for i, req in enumerate(reqs):
        target = req.split(b" ", 2)[1]
        client.send_headers(1 + 2 * i, [(b":method", b"GET"), (b":scheme", b"https"), (b":path", target),
                                        (b":authority", b"127.0.0.1:8080"), (b"user-agent", b"h2load nghttp2/1.52.0")],
                            end_stream=True)  # fmt: skip
        frames.append(client.data_to_send())
    sink = _Sink()
    conn = H2Conn(fe, ClientConn)
    conn.connection_made(sink)
    conn.data_received(preface)
    for frame, resp in zip(frames, resps):
        conn.data_received(frame)
        up.data_received(resp)
        await asyncio.sleep(0)  # h2's frames leave once per loop turn (H2Conn.send)
    await asyncio.sleep(0)
    done = (conn.closed, len(conn.streams), fe.requests_total, fe.h2_requests, len(resps))
    assert done[:2] == (False, 0) and done[2] == done[3] == done[4], f"exchange failed: {done}"
    return len(resps)


def _parse(n: int) -> int:
    from proxy.http1 import RequestParser
    from proxy.lb.frontend import Frontend

    heads = 0
    parser = RequestParser()
    build = Frontend.upstream_head
    fe = Frontend.__new__(Frontend)
    fe._rid, fe._rid_prefix, fe.listen_authority, fe.scheme = 0, b"abcd", b"127.0.0.1:1", b"http"
    for req in realistic.requests(max(n, GENERATED))[:n]:
        head = parser.feed_simple(req)
        if head is None:
            head = parser.feed(req)[0]
        build(fe, head, b"127.0.0.1")
        heads += 1
    return heads


def _classify(what: str, n: int) -> int:
    from proxy.dbproxy.classify import ClassifierCache

    cache = ClassifierCache()
    m = max(n, GENERATED)
    stmts = ormsql.statements(m) if what == "classify-orm" else [
        b"SELECT abalance FROM pgbench_accounts WHERE aid = %d;" % (i * 7919 % 100000 + 1) for i in range(m)]
    del stmts[n:]
    for sql in stmts:
        cache.get_bytes(sql)
    return cache.misses


def run(what: str, n: int) -> str:
    if what.startswith("lb-"):
        return f"{asyncio.run(_lb(what, n))} exchanges"
    if what == "parse-realistic":
        return f"{_parse(n)} requests"
    return f"{n} statements, {_classify(what, n)} cache misses"


def callgrind(what: str, small: int = 1000, large: int = 3000) -> tuple[float, dict[int, str]]:
    """Instructions per item (see the module docstring) and each run's own report."""
    counts, notes = {}, {}
    with tempfile.TemporaryDirectory(prefix="micro-") as tmp:
        for n in (small, large):
            out = Path(tmp) / f"cg.{n}"
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                 "-m", "bench.micro", "run", what, str(n)],
                capture_output=True, text=True, check=True)
            notes[n] = proc.stdout.strip()
            m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
            assert m is not None, f"no totals in {out}"
            counts[n] = int(m.group(1))
    return (counts[large] - counts[small]) / (large - small), notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="feed N items through one path")
    r.add_argument("what", choices=WHATS)
    r.add_argument("n", type=int)
    c = sub.add_parser("callgrind", help="instructions per item under callgrind")
    c.add_argument("what", choices=WHATS, nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        print(run(args.what, args.n))
        return 0
    for what in args.what:
        per_item, notes = callgrind(what)
        print(f"{what}: {per_item / 1000:.1f}k instructions per item ({notes[3000]})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
