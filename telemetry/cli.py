"""The ``telemetry`` command. The event loop (uvloop where available) is chosen here, once."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import structlog
from pydantic import ValidationError

from telemetry.config import (
    DEFAULT_HTTP_PORT,
    AgentConfig,
    AgentSection,
    CollectorConfig,
    ConfigError,
    format_validation_error,
    load_config,
)
from telemetry.log import configure_logging
from telemetry.runtime import run_async

EPILOG = "Environment variables TELEMETRY_<SECTION>__<KEY> override the config file."


def _fail(message: str, status: int = 1) -> int:
    print(f"telemetry: {message}", file=sys.stderr)
    return status


# --- commands ------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    from telemetry.collector import Collector, ListenError
    from telemetry.collector.handoff import HANDOFF_FD_ENV
    from telemetry.collector.workers import WORKER_ENV, Supervisor
    from telemetry.sinks.base import SinkError

    config = load_config(CollectorConfig, args.config)
    configure_logging(config.log.level, config.log.format)
    workers = args.workers or config.collector.workers
    if workers < 1:
        return _fail("--workers must be at least 1", 2)
    handoff = None
    if WORKER_ENV in os.environ:
        structlog.contextvars.bind_contextvars(worker=int(os.environ[WORKER_ENV]))
        if HANDOFF_FD_ENV in os.environ:
            handoff = socket.socket(fileno=int(os.environ[HANDOFF_FD_ENV]))

    async def main() -> None:
        await Collector(config, handoff=handoff).run(on_started=_tune_gc)

    try:
        if workers > 1 and WORKER_ENV not in os.environ:
            return run_async(lambda: Supervisor(config, args.config, workers).run())
        run_async(main)
    except ListenError as exc:
        return _fail(exc.strerror or str(exc))
    except SinkError as exc:  # a sink still failing after its start-up retries
        return _fail(str(exc))
    return 0


def _tune_gc() -> None:
    """A server process allocates many short-lived objects and few cycles: move what start-up
    built out of the collector's sight, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def cmd_agent(args: argparse.Namespace) -> int:
    from telemetry.agent import run_agent

    config = _agent_config(args)
    configure_logging(config.log.level, config.log.format)
    if not config.sources:
        return _fail(
            "no sources: give --source system (or simulated, stdin), or a --config file "
            "with [[sources]]",
            2,
        )

    async def main() -> None:
        # Leave from inside the loop: closing it first waits for the executor's threads, and
        # a name lookup stuck in one (a collector whose DNS name stopped resolving) can take
        # longer than any stop timeout.
        _exit_now(await run_agent(config))

    run_async(main)
    return 1  # not reached: main() leaves the process


def _exit_now(status: int) -> NoReturn:
    """Leave the process at once, once everything is said and closed.

    A name lookup still running in a thread pool (a collector whose DNS name stopped
    resolving) would otherwise hold the exit: the pool's threads are joined when the loop
    closes and when the process ends, and a stuck lookup can take tens of seconds, past any
    stop timeout.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    """The agent config file (or the defaults) with the command line's overrides applied.

    ``--source`` replaces the file's ``[[sources]]``; ``--endpoint`` its endpoints.
    """
    from pydantic import TypeAdapter

    from telemetry.config import SourceConfig

    config = load_config(AgentConfig, args.config)
    agent_updates: dict[str, Any] = {}
    if args.endpoint:
        agent_updates["endpoints"] = args.endpoint
    if args.agent_id:
        agent_updates["id"] = args.agent_id
    if args.token:
        agent_updates["token"] = args.token
    updates: dict[str, Any] = {}
    try:
        if agent_updates:
            updates["agent"] = AgentSection.model_validate(
                {**config.agent.model_dump(), **agent_updates}
            )
        if args.source:
            extra = {"interval": args.interval} if args.interval is not None else {}
            updates["sources"] = TypeAdapter(list[SourceConfig]).validate_python(
                [{"type": kind, **(extra if kind != "stdin" else {})} for kind in args.source]
            )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, None)) from None
    return config.model_copy(update=updates) if updates else config


def cmd_send(args: argparse.Namespace) -> int:
    from telemetry.agent import SendError, send_once

    section = load_config(AgentConfig, args.config).agent if args.config else AgentSection()
    updates: dict[str, Any] = {}
    if args.endpoint:
        updates["endpoints"] = args.endpoint
    if args.agent_id:
        updates["id"] = args.agent_id
    if args.token:
        updates["token"] = args.token
    try:
        section = AgentSection.model_validate({**section.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, None)) from None
    reading = _reading_from_args(args)
    configure_logging("warning", "auto")
    try:
        ack = run_async(lambda: send_once(section, [reading], args.timeout))
    except SendError as exc:
        return _fail(f"not delivered: {exc}", 2)
    if ack.rejected:
        return _fail("rejected: " + "; ".join(ack.rejected[0].errors), 1)
    print(f"accepted {ack.accepted} reading(s), seq {ack.seq}")
    return 0


def _reading_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.json is not None:
        raw = sys.stdin.read() if args.json == "-" else args.json
        try:
            reading = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(reading, dict):
            raise ConfigError("--json must be one JSON object (a reading)")
        return reading
    if args.sensor is None or args.value is None:
        raise ConfigError("give --sensor and --value, or --json")
    reading = {"sensor": args.sensor, "value": args.value}
    for key in ("metric", "unit", "ts"):
        if getattr(args, key) is not None:
            reading[key] = getattr(args, key)
    if args.tag:
        reading["tags"] = dict(_split_tag(tag) for tag in args.tag)
    return reading


def _split_tag(tag: str) -> tuple[str, str]:
    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise ConfigError(f"--tag {tag!r} is not key=value")
    return key, value


def cmd_spool_status(args: argparse.Namespace) -> int:
    from telemetry.agent.disk_spool import SpoolError, read_status

    path = args.path
    if path is None:
        spool = load_config(AgentConfig, args.config).spool
        if spool.path is None:
            where = args.config or "the default agent config"
            return _fail(f"{where} has no [spool] path: its spool is in memory, nothing to show")
        path = spool.path
    try:
        status = read_status(path)
    except SpoolError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return 0
    age = status.oldest_age()
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(status.dropped_by_reason.items()))
    rows = [
        ("spool", status.path),
        ("pending batches", str(status.pending_batches)),
        ("pending readings", str(status.pending_readings)),
        ("oldest", "-" if age is None else f"{age:.1f} s ago"),
        ("bytes", f"{status.bytes} (file {status.file_bytes})"),
        ("dropped", f"{status.dropped}" + (f" ({dropped})" if dropped else "")),
        ("next seq", str(status.next_seq)),
        ("spooled", str(status.spooled)),
        ("acked", str(status.acked)),
        ("rejected", str(status.rejected)),
    ]
    for name, value in rows:
        print(f"{name + ':':<18} {value}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from telemetry.tail import tail

    for tag in args.tag or []:
        _split_tag(tag)
    json_lines = True if args.json else None
    return run_async(
        lambda: tail(
            args.url,
            sensors=args.sensor or [],
            agents=args.agent or [],
            tags=args.tag or [],
            count=args.count,
            json_lines=json_lines,
        )
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from telemetry.bench import BenchError, BenchOptions, run_bench
    from telemetry.config import parse_endpoint

    readings = args.readings
    if readings is None and args.duration is None:
        readings = 100_000
    try:
        host, port = parse_endpoint(args.endpoint)
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
        )
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        result = run_async(lambda: run_bench(opts))
    except BenchError as exc:
        return _fail(str(exc))
    print(json.dumps(result.as_dict()) if args.json else result.format())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    kind = args.kind
    if kind == "auto":
        kind = _guess_kind(args.config)
    model: type[CollectorConfig] | type[AgentConfig] = (
        AgentConfig if kind == "agent" else CollectorConfig
    )
    config = load_config(model, args.config)
    print(f"# {kind} config {args.config or '(defaults)'}: valid", file=sys.stderr)
    print(config.model_dump_json(indent=2))
    return 0


def _guess_kind(path: Path | None) -> str:
    import tomllib

    if path is None:
        return "collector"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return "collector"  # load_config reports the error
    return "agent" if {"agent", "sources", "spool"} & set(data) else "collector"


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemetry",
        description="Stream sensor readings from agents to a collector and into sinks.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    collect = sub.add_parser(
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
    collect.set_defaults(func=cmd_collect)

    agent = sub.add_parser(
        "agent",
        help="run an agent",
        description="Run an agent: read its sources, batch readings, send them to the "
        "collector and resend until acked. Exits 0 once every reading is acked after its "
        "sources end (stdin EOF) or on SIGTERM, 1 if some were still unacked at the deadline.",
        epilog=EPILOG,
    )
    agent.add_argument("--config", "-c", type=Path, help="agent TOML file")
    agent.add_argument(
        "--source",
        action="append",
        choices=["system", "simulated", "stdin"],
        help="a source with its defaults (repeatable; replaces the config's [[sources]])",
    )
    agent.add_argument(
        "--interval", type=float, help="seconds between samples of the --source sources"
    )
    agent.add_argument(
        "--endpoint",
        "-e",
        action="append",
        help="collector host:port (repeatable; replaces agent.endpoints)",
    )
    agent.add_argument("--id", dest="agent_id", help="agent id (default: the host name)")
    agent.add_argument("--token", help="hello token, if the collector requires one")
    agent.set_defaults(func=cmd_agent)

    send = sub.add_parser(
        "send",
        help="send one reading and wait for its ack",
        description="Send one reading (from flags or --json) as an acked batch, for scripts "
        "and cron jobs. Exits 0 when accepted, 1 when rejected (reasons on stderr), 2 when "
        "no collector took it.",
        epilog=EPILOG,
    )
    send.add_argument("--config", "-c", type=Path, help="agent TOML file to take [agent] from")
    send.add_argument(
        "--endpoint",
        "-e",
        action="append",
        help="collector host:port (repeatable; default 127.0.0.1:7600)",
    )
    send.add_argument("--agent-id", help="agent id (default: the host name)")
    send.add_argument("--token", help="hello token, if the collector requires one")
    send.add_argument("--sensor", "-s", help="sensor name, e.g. greenhouse-2/soil-3")
    send.add_argument("--value", "-v", type=float, help="the value (a number)")
    send.add_argument("--metric", "-m")
    send.add_argument("--unit", "-u")
    send.add_argument("--ts", help="RFC 3339 timestamp with offset (default: receive time)")
    send.add_argument("--tag", "-t", action="append", help="tag key=value (repeatable)")
    send.add_argument("--json", help="the whole reading as a JSON object ('-' reads stdin)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    send.set_defaults(func=cmd_send)

    spool = sub.add_parser(
        "spool",
        help="inspect an agent's disk spool",
        description="Inspect an agent's disk spool ([spool] path). Safe while the agent runs.",
        epilog=EPILOG,
    )
    spool_sub = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    status = spool_sub.add_parser(
        "status",
        help="pending batches and readings, oldest age, bytes, dropped counts, next seq",
        description="Print what the spool holds: pending batches and readings, the age of the "
        "oldest, bytes, readings dropped by reason, the next seq and the ledger counters.",
        epilog=EPILOG,
    )
    source = status.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", type=Path, help="agent TOML file to take [spool] from")
    source.add_argument("--path", "-p", type=Path, help="the spool file itself")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=cmd_spool_status)

    tail = sub.add_parser(
        "tail",
        help="print live readings from a running collector",
        description="Print readings as a running collector receives them, from its HTTP side "
        "port (filtered there). Aligned, colored columns on a terminal (NO_COLOR turns colors "
        "off); one JSON line per reading when piped. Readings the collector had to drop "
        "because this reader was too slow are reported on stderr.",
        epilog="Examples: telemetry tail --sensor 'greenhouse-*' --tag site=north; "
        "telemetry tail --agent pi-3 | jq .value",
    )
    tail.add_argument(
        "--url",
        default=f"http://127.0.0.1:{DEFAULT_HTTP_PORT}",
        help=f"the collector's HTTP side port (default http://127.0.0.1:{DEFAULT_HTTP_PORT})",
    )
    tail.add_argument("--sensor", "-s", action="append", help="sensor glob (repeatable: any)")
    tail.add_argument("--agent", "-a", action="append", help="agent glob (repeatable: any)")
    tail.add_argument(
        "--tag", "-t", action="append", help="tag key=glob (repeatable: all must match)"
    )
    tail.add_argument("--count", "-n", type=int, default=0, help="exit 0 after this many readings")
    tail.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    tail.set_defaults(func=cmd_tail)

    bench = sub.add_parser(
        "bench",
        help="load-test a running collector",
        description="Load-test a running collector, like nats bench or redis-benchmark: "
        "send ~150-byte readings over N connections, as acked batches (--batch N) or as "
        "fire-and-forget frames (--batch 0, completion detected by one acked marker batch "
        "per connection), as fast as possible or at --rate. Reports readings/s, MiB/s, ack "
        "latency percentiles and the CPU the bench itself used.",
        epilog="Examples: telemetry bench -e 127.0.0.1:7600 --connections 4; "
        "telemetry bench --batch 0 --rate 20000 --duration 10 --json",
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
    bench.set_defaults(func=cmd_bench)

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description="Validate a collector or agent config file with the environment "
        "overrides applied; print the effective config as JSON, or the errors.",
        epilog=EPILOG,
    )
    check.add_argument("config", nargs="?", type=Path, help="TOML file (default: defaults)")
    check.add_argument(
        "--kind",
        choices=["auto", "collector", "agent"],
        default="auto",
        help="which config it is (auto: agent if it has [agent] or [[sources]])",
    )
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `telemetry check-config | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
