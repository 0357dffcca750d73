"""`python -m bench lb|dbproxy|cache|geodns|shard|failover|queue|cdn [options]`: the command line of the benchmark harness."""

from __future__ import annotations

import argparse
import sys

from bench import cache, cdn, dbproxy, failover, geodns, jobqueue, lb, shard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="tierproxy benchmarks")
    sub = parser.add_subparsers(dest="scenario", required=True)
    lb.add_arguments(sub.add_parser("lb", help=lb.__doc__.split("\n")[0]))
    dbproxy.add_arguments(sub.add_parser("dbproxy", help=dbproxy.__doc__.split("\n")[0]))
    cache.add_arguments(sub.add_parser("cache", help=cache.__doc__.split("\n")[0]))
    geodns.add_arguments(sub.add_parser("geodns", help=geodns.__doc__.split("\n")[0]))
    shard.add_arguments(sub.add_parser("shard", help=shard.__doc__.split("\n")[0]))
    failover.add_arguments(sub.add_parser("failover", help=failover.__doc__.split("\n")[0]))
    jobqueue.add_arguments(sub.add_parser("queue", help=jobqueue.__doc__.split("\n")[0]))
    cdn.add_arguments(sub.add_parser("cdn", help=cdn.__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    if args.scenario == "lb":
        return lb.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "dbproxy":
        return dbproxy.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "cache":
        return cache.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "geodns":
        return geodns.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "shard":
        return shard.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "failover":
        return failover.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "queue":
        return jobqueue.run(args, argv if argv is not None else sys.argv[1:])
    if args.scenario == "cdn":
        return cdn.run(args, argv if argv is not None else sys.argv[1:])
    parser.error(f"unknown scenario {args.scenario!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
