"""``telemetry collect``: run the collector (or a supervisor and ``--workers`` collectors)."""

from __future__ import annotations

import argparse
import gc
import os
import signal
from pathlib import Path

from telemetry.cli._common import EPILOG, fail, missing_extra


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``collect`` command's parser."""
    collect = subparsers.add_parser(
        "collect",
        help="run the collector",
        description="Run the collector: accept agents on the ingest port, write readings to "
        "the configured sinks, serve /healthz and /readyz on the HTTP port. SIGTERM or SIGINT "
        "drains and exits 0.",
        epilog=EPILOG,
    )
    collect.add_argument(
        "--config",
        "-c",
        type=Path,
        help="collector TOML file (default: built-in defaults, SQLite at data/telemetry.db)",
    )
    collect.add_argument(
        "--workers",
        "-w",
        type=int,
        metavar="N",
        help="run N collector processes under one supervisor that accepts on the ingest port, "
        "hands connections to the workers in turn and serves the HTTP port "
        "(default: [collector] workers, 1)",
    )
    collect.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the collector until it is told to stop; 0 after a drain (2 without the extra)."""
    # Until the collector's own handler is in place, a SIGHUP must not end it undrained.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    status = missing_extra("telemetry collect")
    if status is not None:
        return status
    import socket

    import structlog

    from telemetry.collector import Collector, ListenError
    from telemetry.collector.handoff import HANDOFF_FD_ENV
    from telemetry.collector.http_guard import DescriptorLimitError
    from telemetry.collector.workers import WORKER_ENV, Supervisor
    from telemetry.config import CollectorConfig, load_config
    from telemetry.log import configure_logging
    from telemetry.runtime import run_async
    from telemetry.sinks.base import SinkError
    from telemetry.sinks.requirements import check_sink_drivers

    config = load_config(CollectorConfig, args.config)
    check_sink_drivers(config)  # a missing driver: one line with the pip install, exit 2
    configure_logging(config.log.level, config.log.format)
    workers = args.workers or config.collector.workers
    if workers < 1:
        return fail("--workers must be at least 1", 2)
    handoff = None
    if WORKER_ENV in os.environ:
        structlog.contextvars.bind_contextvars(worker=int(os.environ[WORKER_ENV]))
        if HANDOFF_FD_ENV in os.environ:
            handoff = socket.socket(fileno=int(os.environ[HANDOFF_FD_ENV]))

    async def main() -> None:
        collector = Collector(config, handoff=handoff, config_path=args.config)
        await collector.run(on_started=_tune_gc)

    try:
        if workers > 1 and WORKER_ENV not in os.environ:
            return run_async(lambda: Supervisor(config, args.config, workers).run())
        run_async(main)
    except ListenError as exc:
        return fail(exc.strerror or str(exc))
    except DescriptorLimitError as exc:  # the connection limits do not fit RLIMIT_NOFILE
        return fail(str(exc), 2)
    except SinkError as exc:  # a sink still failing after its start-up retries
        return fail(str(exc))
    return 0


def _tune_gc() -> None:
    """A server process allocates many short-lived objects and few cycles: move what start-up
    built out of the collector's sight, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
