"""The `tierproxy` command: run a daemon, check a config, or run the demo.

    tierproxy lb --config lb.toml
    tierproxy dbproxy --config dbproxy.toml
    tierproxy geodns --config geodns.toml
    tierproxy shard --config shard.toml
    tierproxy cdn --config cdn.toml       # the caching edge (docs/cdn.md)
    tierproxy cdn whatif --trace FILE --size 64MiB   # replay a key trace under each eviction policy
    tierproxy shard reshard --from OLD.toml --to NEW.toml [--dry-run]   # move rows to a new map
    tierproxy check-config lb.toml        # any daemon's config; exit 2 with located errors
    tierproxy demo                        # the whole architecture on this machine
    tierproxy queue worker --config queue.toml   # queue workers; also: queue stats, queue dlq ...
    tierproxy --version                   # and which twin of the native layer runs

Daemons are imported lazily so that one daemon's code never loads another's.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from pathlib import Path
from typing import Any

from proxy.core.config import ConfigError, load_config

__all__ = ["build_parser", "main"]

# daemon name -> (config model, daemon class), as "module:attr" so nothing loads until used.
DAEMONS: dict[str, tuple[str, str]] = {
    "lb": ("proxy.lb.config:LbConfig", "proxy.lb.daemon:LbDaemon"),
    "dbproxy": ("proxy.dbproxy.config:DbProxyConfig", "proxy.dbproxy.daemon:DbProxyDaemon"),
    "geodns": ("proxy.geodns.config:GeoDnsConfig", "proxy.geodns.daemon:GeoDnsDaemon"),
    "shard": ("proxy.shard.config:ShardConfig", "proxy.shard.daemon:ShardDaemon"),
    "cdn": ("proxy.cdn.config:CdnConfig", "proxy.cdn.daemon:CdnDaemon"),
}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _guess_daemon(path: Path) -> str | None:
    """Which daemon a config file is for: a `daemon = "..."` key is not part of the models, so
    go by file name first (lb.toml, lb-*.toml), then by shape."""
    stem = path.stem.lower()
    for name in DAEMONS:
        if stem == name or stem.startswith(name + "-") or stem.startswith(name + "_"):
            return name
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    if "pools" in data:
        return "lb"
    if "primary" in data:
        return "dbproxy"
    if "zones" in data:
        return "geodns"
    if "shards" in data:
        return "shard"
    if "origins" in data or "origin" in data:
        return "cdn"
    return None


def check_config(path: str, daemon: str | None) -> int:
    p = Path(path)
    name = daemon or _guess_daemon(p)
    if name is None:
        print(f"{p.name}: cannot tell which daemon this config is for; pass --daemon", file=sys.stderr)
        return 2
    model = _load(DAEMONS[name][0])
    try:
        cfg = load_config(p, model)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    # Allowed but probably unwise (a model may say what): printed, not fatal.
    for warning in getattr(cfg, "warnings", list)():
        print(f"{p.name}: warning: {warning}", file=sys.stderr)
    print(f"{p.name}: ok ({name})")
    return 0


def run_daemon(name: str, path: str, log_level: str | None, json_logs: bool | None,
               worker_fd: int | None = None) -> int:
    from proxy.core.runtime import run, setup_logging

    model = _load(DAEMONS[name][0])
    try:
        cfg = load_config(path, model)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    setup_logging(log_level or getattr(cfg, "log_level", "info"), json_logs)
    cls = _load(DAEMONS[name][1])
    daemon = cls(cfg, path) if worker_fd is None else cls(cfg, path, worker_fd=worker_fd)
    return run(daemon, name)


def version_text() -> str:
    """The version, the Python running it, and the native layer's state (proxy/_native.py)."""
    from importlib.metadata import PackageNotFoundError, version

    from proxy import _native

    try:
        ours = version("tierproxy")
    except PackageNotFoundError:
        ours = "(not installed)"
    return f"tierproxy {ours} (Python {sys.version.split()[0]})\n{_native.summary()}"


class _VersionAction(argparse.Action):
    """--version, computed only when asked (it imports the native modules)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and the native layer's state")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


def _reshard_arguments(p: argparse.ArgumentParser) -> None:
    """`tierproxy shard reshard`'s options (proxy/shard/reshard_run.py runs it)."""
    p.add_argument("--from", dest="old", required=True, metavar="OLD.toml",
                   help="the config the running router routes by")
    p.add_argument("--to", dest="new", required=True, metavar="NEW.toml", help="the config to move to")
    p.add_argument("--dry-run", action="store_true", help="only print the keys and rows that would move")
    p.add_argument("--database", default="postgres", help="the database holding the tables on every shard")
    p.add_argument("--router", metavar="HOST:PORT", help="the router's admin address (default: OLD's admin.address)")
    p.add_argument("--range-keys", type=int, default=500, help="keys per range copied and verified together")
    p.add_argument("--hold", type=float, default=5.0,
                   help="seconds the router holds a write to a moving key before refusing it (40001)")
    p.add_argument("--lease", type=float, default=30.0,
                   help="seconds the router keeps the fence without a renewal (if this command stops)")
    p.add_argument("--quiesce", type=float, default=30.0,
                   help="seconds to wait for statements and transactions begun before the fence")  # fmt: skip


def _whatif_arguments(p: argparse.ArgumentParser) -> None:
    """`tierproxy cdn whatif`'s options (proxy/cdn/whatif.py runs it)."""
    p.add_argument("--trace", required=True, metavar="FILE", help="a key trace recorded by tierproxy cdn")
    p.add_argument("--size", required=True, help="the cache's max_bytes, e.g. 64MiB")
    p.add_argument("--max-object", default="8MiB", help="cache.max_object_bytes (larger objects are never stored)")
    p.add_argument("--policies", default=None, help="comma-separated (default: all: lru,lfu,fifo,wtinylfu)")
    p.add_argument("--warmup", type=int, default=0, help="lookups that only fill the cache (not counted)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (deploy/systemd's test parses the units' ExecStart lines with it)."""
    parser = argparse.ArgumentParser(prog="tierproxy", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in DAEMONS:
        p = sub.add_parser(name, help=f"run tierproxy {name}")
        p.add_argument("--config", "-c", required=name not in ("shard", "cdn"), help="TOML config file")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument("--json-logs", action=argparse.BooleanOptionalAction, default=None,
                       help="JSON log lines (default: when stderr is not a terminal)")
        # internal: the control channel of a worker process started by a supervisor
        p.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
        if name == "shard":
            tools = p.add_subparsers(dest="shard_command")
            _reshard_arguments(tools.add_parser(
                "reshard", help="move rows to the shards a new config names, the router serving (docs/shard.md)"))
        if name == "cdn":
            _whatif_arguments(p.add_subparsers(dest="cdn_command").add_parser(
                "whatif", help="replay a recorded key trace under each eviction policy (docs/cdn.md)"))
    cc = sub.add_parser("check-config", help="validate a config file and exit (2 on errors)")
    cc.add_argument("file")
    cc.add_argument("--daemon", choices=sorted(DAEMONS))
    from workers.queue.cli import add_arguments as queue_arguments

    queue_arguments(sub.add_parser("queue", help="the Redis Streams job queue: worker, stats, dlq (docs/queue.md)"))
    demo = sub.add_parser("demo", help="run the whole architecture on this machine")
    demo.add_argument("--port", type=int, default=8080, help="load balancer port")
    demo.add_argument("--admin-port", type=int, default=9080)
    demo.add_argument("--https-port", type=int, default=8443, help="load balancer HTTPS + HTTP/2 port")
    demo.add_argument("--workers", type=int, default=2, help="web workers behind the balancer")
    demo.add_argument("--db-port", type=int, default=6432, help="tierproxy dbproxy port")
    demo.add_argument("--db-admin-port", type=int, default=9187, help="tierproxy dbproxy admin port")
    demo.add_argument("--dns-port", type=int, default=5353, help="tierproxy geodns port (UDP and TCP)")
    demo.add_argument("--dns-admin-port", type=int, default=9053, help="tierproxy geodns admin port")
    demo.add_argument("--shard-port", type=int, default=6433, help="tierproxy shard port")
    demo.add_argument("--shard-admin-port", type=int, default=9188, help="tierproxy shard admin port")
    demo.add_argument("--cdn-port", type=int, default=8088, help="tierproxy cdn port (the web workers' /static/)")
    demo.add_argument("--cdn-admin-port", type=int, default=9088, help="tierproxy cdn admin port")
    demo.add_argument("--queue-admin-port", type=int, default=9400,
                      help="the queue worker's /metrics and status page")
    demo.add_argument("--traffic", action="store_true",
                      help="drive a steady mixed load over every tier (status pages and dashboards move)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file, args.daemon)
    if args.command == "shard" and args.shard_command == "reshard":
        from proxy.shard.reshard_run import main as reshard_main

        return reshard_main(args)
    if args.command == "shard" and args.config is None:
        parser.error("tierproxy shard: --config is required")
    if args.command == "cdn" and args.cdn_command == "whatif":
        from proxy.cdn.whatif import main as whatif_main

        return whatif_main(args)
    if args.command == "cdn" and args.config is None:
        parser.error("tierproxy cdn: --config is required")
    if args.command == "queue":
        from workers.queue.cli import main as queue_main

        return queue_main(args)
    if args.command == "demo":
        from proxy.demo import run_demo

        return run_demo(args)
    return run_daemon(args.command, args.config, args.log_level, args.json_logs,
                      getattr(args, "worker_fd", None))


if __name__ == "__main__":
    sys.exit(main())
