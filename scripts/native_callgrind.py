"""Micro-drivers for the native layer's hot functions: instructions per call under callgrind, and
a timeit figure. No pytest, no sockets: each case calls one hot function on fixed inputs.

    python scripts/native_callgrind.py                 # every case, compiled and pure, callgrind
    python scripts/native_callgrind.py request --timeit
    python scripts/native_callgrind.py --run request 3000   # (what valgrind runs)

Instructions per call are the difference between a 3,000- and a 1,000-iteration run divided by
2,000, so start-up cancels out; callgrind counts instructions, not time, so the figure does not
depend on what else the machine is doing (docs/perf.md). TIERPROXY_PURE=1 for the pure twin
(`--pure`). PYTHONPATH decides which checkout is measured.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import timeit
from typing import Callable

# A wrk-like request, a browser-like one (no Connection header: the simple path's shape today), and
# a backend response with a Date and a keep-alive line.
WRK_REQUEST = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER_REQUEST = (
    b"GET /app/items?page=3&sort=name HTTP/1.1\r\nHost: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: session=4f9a1c2b7d; theme=dark\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 07:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 12\r\nConnection: keep-alive\r\n"
    b"ETag: \"6571a2b0-c\"\r\n\r\nhello world\n"
)


def _cases() -> dict[str, Callable[[], Callable[[], object]]]:
    def request() -> Callable[[], object]:
        from proxy.http1._simple import simple_request

        return lambda: simple_request(BROWSER_REQUEST, 8192)

    def request_keep_alive() -> Callable[[], object]:
        from proxy.http1._simple import simple_request

        data = BROWSER_REQUEST[:-2] + b"Connection: keep-alive\r\n\r\n"
        return lambda: simple_request(data, 8192)

    def wrk_request() -> Callable[[], object]:
        from proxy.http1._simple import simple_request

        return lambda: simple_request(WRK_REQUEST, 8192)

    def response() -> Callable[[], object]:
        from proxy.http1._simple import simple_response

        return lambda: simple_response(RESPONSE, 8192)

    return {"request": request, "request_keep_alive": request_keep_alive, "wrk_request": wrk_request, "response": response, "exchange": exchange,
            "exchange_vary": exchange_vary,
            "frame_rows": frame_rows, "frame_extended": frame_extended,
            "classify_pgbench": lambda: classify_hit(PGBENCH_SQL), "classify_orm": lambda: classify_hit(ORM_SQL),
            "classify_ormmix": classify_ormmix,
            "classify_begin": classify_same(b"BEGIN;"), "key_pgbench": lambda: key(PGBENCH_SQL), "key_orm": lambda: key(ORM_SQL),
            "key_orm_str": lambda: key(ORM_SQL, text=True),
            "hint_none": lambda: hint(PGBENCH_SQL), "hint_comment": lambda: hint(ORM_SQL),
            "hint_cache": lambda: hint(b"/* app:shop */ -- tierproxy:cache ttl=30\n" + PGBENCH_SQL, cache=True)}


def _msg(t: bytes, body: bytes) -> bytes:
    return t + (len(body) + 4).to_bytes(4, "big") + body


def _answer(rows: int) -> bytes:
    """A server's answer to a SELECT: RowDescription, `rows` DataRows, CommandComplete, ReadyForQuery."""
    row = _msg(b"D", b"\x00\x02" + b"\x00\x00\x00\x06" + b"123456" + b"\x00\x00\x00\x0b" + b"hello world")
    desc = _msg(b"T", b"\x00\x02" + (b"aid\x00" + b"\x00" * 18) + (b"abalance\x00" + b"\x00" * 18))
    return desc + row * rows + _msg(b"C", b"SELECT %d\x00" % rows) + _msg(b"Z", b"I")


_SPECIAL = bytes(1 if i in b"13ZEGS" else 0 for i in range(256))


def frame_rows() -> Callable[[], object]:
    """`BackendFramer.feed` of a 20-row answer (internal queries, the shard gather)."""
    from proxy.pgwire.framing import BackendFramer

    framer = BackendFramer()
    data = _answer(20)
    return lambda: framer.feed(data)


def frame_extended() -> Callable[[], object]:
    """`FrontendFramer.feed` of an extended-protocol batch (Parse, Bind, Describe, Execute, Sync)."""
    from proxy.pgwire.framing import FrontendFramer

    framer = FrontendFramer(startup=False)
    sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    data = (_msg(b"P", b"\x00" + sql + b"\x00\x00\x00") + _msg(b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00")
            + _msg(b"D", b"P\x00") + _msg(b"E", b"\x00\x00\x00\x00\x00") + _msg(b"S", b""))  # fmt: skip
    return lambda: framer.feed(data)


PGBENCH_SQL = b"SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"
ORM_SQL = (b"/* app:shop,controller:items */ SELECT items.id, items.name FROM items WHERE items.owner = 'alice' "
           b"AND items.state IN ('open', 'held') ORDER BY items.id LIMIT 20")


def classify_hit(sql: bytes) -> Callable[[], object]:
    """A hit in the classifier's cache (`ClassifierCache.get_bytes`), the statement seen before with
    other literals (keyed by `literal_key_bytes`): pgbench's number, or the ORM statement's strings,
    comment tag and LIMIT, so no variant is a hit on its exact text."""
    from proxy.dbproxy.classify import ClassifierCache

    cache = ClassifierCache()
    cache.get_bytes(sql)
    variants = [sql.replace(b"4711", b"%d" % i).replace(b"alice", b"user%d" % i).replace(b"items */", b"r%d */" % i)
                .replace(b"LIMIT 20", b"LIMIT %d" % (i + 1)) for i in range(100)]  # fmt: skip
    assert len(set(variants)) == 100 and sql not in variants[1:]
    state = [0]

    def one() -> object:
        state[0] += 1
        return cache.get_bytes(variants[state[0] % 100])

    return one


def classify_same(sql: bytes) -> Callable[[], Callable[[], object]]:
    """A hit in the classifier's cache on a text that is its own key (pgbench tpcb-like's BEGIN and
    END: no literal to replace, found by the one lookup)."""

    def case() -> Callable[[], object]:
        from proxy.dbproxy.classify import ClassifierCache

        cache = ClassifierCache()
        cache.get_bytes(sql)
        return lambda: cache.get_bytes(sql)

    return case


def classify_ormmix() -> Callable[[], object]:
    """Cache hits over bench/ormsql.py's statement mix (`bench dbproxy --workloads orm`): six shapes,
    each text new (string literals, IN lists, tagging comments), all keyed to a seen shape."""
    from bench.ormsql import statements
    from proxy.dbproxy.classify import ClassifierCache

    cache = ClassifierCache()
    texts = statements(600)
    for sql in texts[:100]:
        cache.get_bytes(sql)
    misses, texts, state = cache.misses, texts[100:], [0]

    def one() -> object:
        state[0] += 1
        return cache.get_bytes(texts[state[0] % 500])

    one()
    assert cache.misses == misses, "the mix missed the cache"
    return one


def key(sql: bytes, text: bool = False) -> Callable[[], object]:
    """`literal_key_bytes` alone (the cache key of a statement), or `literal_key` of its text."""
    from proxy.dbproxy.classify import literal_key, literal_key_bytes

    if text:
        decoded = sql.decode()
        return lambda: literal_key(decoded)
    return lambda: literal_key_bytes(sql)


def hint(sql: bytes, cache: bool = False) -> Callable[[], object]:
    """The walk over a statement's leading comments: the classifier's routing hint (run by every
    `classify`, that is every cache miss), or the query cache's TTL hint (`cache`)."""
    from proxy.dbproxy import classify, qcache_policy

    text = sql.decode()
    fn = qcache_policy.cache_hint if cache else classify._leading_hint
    return lambda: fn(text)


class _Sink:
    """A transport that takes everything and does nothing (the exchange harness's sockets)."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("10.0.0.7", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    abort = pause_reading = resume_reading = close


def exchange() -> Callable[[], object]:
    """One whole lb exchange in process (docs/perf.md, method 2): a browser-like request into
    `ClientConn.data_received`, a response into `UpstreamConn.data_received`, with do-nothing
    transports and a keep-alive backend connection that goes back idle. Every request and every
    response differs from the one before (no per-connection memo hit), as with `bench lb --vary`."""
    import asyncio

    from proxy.lb.client import ClientConn
    from proxy.lb.config import LbConfig
    from proxy.lb.frontend import Frontend
    from proxy.lb.pool import Pool
    from proxy.upstream.conn import UpstreamConn

    cfg = LbConfig.model_validate({"pools": {"p": {"backends": [{"name": "b", "address": "127.0.0.1:1"}]}}})
    requests = [BROWSER_REQUEST.replace(b"page=3", b"page=%d" % i) for i in range(97)]
    responses = [RESPONSE.replace(b"07:00:00", b"07:00:%02d" % (i % 60)).replace(b"-c\"", b"-%d\"" % i)
                 for i in range(89)]  # fmt: skip

    async def build() -> tuple[ClientConn, UpstreamConn]:
        pool = Pool("p", cfg.pools["p"], lambda b: None, lambda b: None)
        fe = Frontend(cfg, {"p": pool})
        client = ClientConn(fe)
        client.connection_made(_Sink())  # type: ignore[arg-type]
        backend = next(iter(pool.backends.values()))
        up = UpstreamConn(backend, cfg.limits.max_header_bytes)
        up.connection_made(_Sink())  # type: ignore[arg-type]
        backend.idle.append(up)
        return client, up

    loop = asyncio.new_event_loop()
    client, up = loop.run_until_complete(build())
    state = [0]

    def one() -> None:
        i = state[0] = state[0] + 1
        client.data_received(requests[i % 97])
        up.data_received(responses[i % 89])

    one()
    assert client.req is None and client.backend is None and up.client is None, "the exchange did not end"
    return one


# `bench lb --vary`'s shape: wrk's bare GET with a query string counting up, nginx's `return 200
# "ok\n"` answer (its Date changing), round robin over two backends as bench/servers.py configures.
VARY_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 07:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)


def exchange_vary() -> Callable[[], object]:
    """One whole lb exchange of `bench lb --vary`'s shape (as `exchange`, otherwise): wrk's bare
    `GET /?r=N` (every one distinct), nginx's 3-byte answer, round robin over two backends, each
    with an idle keep-alive connection."""
    import asyncio

    from proxy.lb.client import ClientConn
    from proxy.lb.config import LbConfig
    from proxy.lb.frontend import Frontend
    from proxy.lb.pool import Pool
    from proxy.upstream.conn import UpstreamConn

    cfg = LbConfig.model_validate({"pools": {"p": {"algorithm": "round_robin", "backends": [
        {"name": "b1", "address": "127.0.0.1:1"}, {"name": "b2", "address": "127.0.0.1:2"}]}}})
    requests = [b"GET /?r=%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" % i for i in range(1000, 1097)]
    responses = [VARY_RESPONSE.replace(b"07:00:00", b"07:%02d:%02d" % (i // 60, i % 60)) for i in range(89)]

    async def build() -> tuple[ClientConn, list[UpstreamConn]]:
        pool = Pool("p", cfg.pools["p"], lambda b: None, lambda b: None)
        fe = Frontend(cfg, {"p": pool})
        client = ClientConn(fe)
        client.connection_made(_Sink())  # type: ignore[arg-type]
        ups = []
        for backend in pool.backends.values():
            up = UpstreamConn(backend, cfg.limits.max_header_bytes)
            up.connection_made(_Sink())  # type: ignore[arg-type]
            backend.idle.append(up)
            ups.append(up)
        return client, ups

    loop = asyncio.new_event_loop()
    client, ups = loop.run_until_complete(build())
    state = [0]

    def one() -> None:
        i = state[0] = state[0] + 1
        client.data_received(requests[i % 97])
        ups[(i - 1) % 2].data_received(responses[i % 89])  # round robin: b1, b2, b1, ...

    for _ in range(2):
        one()
        assert client.req is None and client.backend is None, "the exchange did not end"
    assert all(len(u.backend.idle) == 1 and u.backend.requests == 1 for u in ups), "not round robin"
    return one


CASES = _cases()


def run(case: str, n: int) -> None:
    fn = CASES[case]()
    for _ in range(n):
        fn()


def _instructions(case: str, n: int, env: dict[str, str], keep: str | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(keep or tmp, f"cg.{case}.{'pure' if env.get('TIERPROXY_PURE') else 'compiled'}.{n}.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                        os.path.abspath(__file__), "--run", case, str(n)],
                       env=env, check=True, capture_output=True)  # fmt: skip
        with open(out) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        assert m is not None
        return int(m.group(1))


def per_call(case: str, pure: bool, keep: str | None = None) -> float:
    env = dict(os.environ)
    env.pop("TIERPROXY_PURE", None)
    if pure:
        env["TIERPROXY_PURE"] = "1"
    return (_instructions(case, 3000, env, keep) - _instructions(case, 1000, env, keep)) / 2000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", help=f"of {', '.join(CASES)} (default: all)")
    ap.add_argument("--run", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--timeit", action="store_true", help="microseconds per call (best of 5) instead")
    ap.add_argument("--pure", action="store_true", help="only the pure twin")
    ap.add_argument("--keep", metavar="DIR", help="keep callgrind's output files there "
                    "(cg.CASE.pure|compiled.N.out: callgrind_annotate, or a diff of the 3,000 and 1,000 runs)")
    args = ap.parse_args()
    if args.run:
        run(args.run[0], int(args.run[1]))
        return 0
    from proxy import _native

    print(_native.summary())
    for case in args.cases or list(CASES):
        if args.timeit:
            fn = CASES[case]()
            best = min(timeit.repeat(fn, number=20000, repeat=5)) / 20000 * 1e6
            print(f"{case:14} {best:8.3f} us/call")
            continue
        pure = per_call(case, True, args.keep)
        line = f"{case:14} pure {pure:9.0f} instr/call"
        if not args.pure:
            native = per_call(case, False, args.keep)
            line += f"   compiled {native:9.0f}   ({native / pure:.2f}x)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
