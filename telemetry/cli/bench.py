"""``telemetry bench``: load-test a running collector (the load generator is
:mod:`telemetry.bench`)."""

from __future__ import annotations

import argparse

from telemetry.cli._common import fail
from telemetry.cli._tls import add_tls_arguments, tls_flags


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``bench`` command's parser."""
    bench = subparsers.add_parser(
        "bench",
        help="load-test a running collector",
        description="Load-test a running collector, like nats bench or redis-benchmark: "
        "send ~150-byte readings over N connections, as acked batches (--batch N) or as "
        "fire-and-forget frames (--batch 0, completion detected by one acked marker batch "
        "per connection), as fast as possible or at --rate. Reports readings/s, MiB/s, ack "
        "latency percentiles and the CPU the bench itself used. "
        "End to end into a sink: run the collector with that sink configured (and only it, "
        "to measure it alone); a batch is acked once every sink of its route has committed "
        "it, so acked batches (--batch N) give the readings/s stored and the ack latency is "
        "the time to storage. Fire-and-forget figures are end to end too: the final marker "
        "batch is acked after it went through the same sink queues.",
        epilog="Examples: telemetry bench -e 127.0.0.1:7600 --connections 4; "
        "telemetry bench --batch 0 --rate 20000 --duration 10 --json. "
        "Every sink, its raw limit and rsyslog in one table: benchmarks/run_all.py "
        "(docs/benchmarks.md).",
    )
    bench.add_argument(
        "--endpoint",
        "-e",
        default="127.0.0.1:7600",
        metavar="HOST:PORT",
        help="collector host:port (default 127.0.0.1:7600)",
    )
    bench.add_argument(
        "--connections", "-n", type=int, default=1, metavar="N", help="connections (default 1)"
    )
    bench.add_argument(
        "--readings",
        "-r",
        type=int,
        metavar="N",
        help="readings in all, split over the connections (default 100000, or no limit "
        "with --duration)",
    )
    bench.add_argument(
        "--batch",
        "-b",
        type=int,
        default=500,
        metavar="N",
        help="readings per acked batch; 0 sends one fire-and-forget reading per frame "
        "(default 500)",
    )
    bench.add_argument(
        "--rate", type=float, metavar="R", help="target readings/s in all (default: max)"
    )
    bench.add_argument(
        "--duration", "-d", type=float, metavar="S", help="stop sending after this many seconds"
    )
    bench.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="most unacked batches per connection (default: the collector's)",
    )
    bench.add_argument(
        "--agent-prefix",
        default="bench",
        metavar="PREFIX",
        help="agent ids are <prefix>-<n> (default bench)",
    )
    bench.add_argument("--token", help="hello token, if the collector requires one")
    bench.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to connect, and the longest wait for progress (default 30)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_tls_arguments(bench)
    bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the bench and print its result; 2 for bad options, 1 when the bench failed."""
    import json

    from telemetry.bench import BenchError, BenchOptions, run_bench
    from telemetry.config import parse_endpoint
    from telemetry.config.tls import ClientTlsConfig
    from telemetry.runtime import run_async
    from telemetry.tls import client_tls

    readings = args.readings
    if readings is None and args.duration is None:
        readings = 100_000
    try:
        host, port = parse_endpoint(args.endpoint)
        flags = tls_flags(args)
        tls = client_tls(ClientTlsConfig(**flags), "--tls") if flags is not None else None
        opts = BenchOptions(
            host=host,
            port=port,
            connections=args.connections,
            readings=readings,
            batch=args.batch,
            rate=args.rate,
            duration=args.duration,
            window=args.window,
            agent_prefix=args.agent_prefix,
            token=args.token,
            timeout=args.timeout,
            tls=tls,
        )
    except ValueError as exc:
        return fail(str(exc), 2)
    try:
        result = run_async(lambda: run_bench(opts))
    except BenchError as exc:
        return fail(str(exc))
    print(json.dumps(result.as_dict()) if args.json else result.format())
    return 0
