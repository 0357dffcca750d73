"""`python -m bench lb|dbproxy|cache|geodns|shard|failover|queue|cdn [options]`: the command line of the benchmark harness."""

from __future__ import annotations

import argparse
import sys

from bench import cache, cdn, dbproxy, failover, geodns, jobqueue, lb, shard

# Each scenario's module: its docstring's first line is the help, add_arguments its options, run
# (args, argv) the benchmark.
SCENARIOS = {"lb": lb, "dbproxy": dbproxy, "cache": cache, "geodns": geodns, "shard": shard, "failover": failover,
             "queue": jobqueue, "cdn": cdn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="tierproxy benchmarks")
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name, module in SCENARIOS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    return SCENARIOS[args.scenario].run(args, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
