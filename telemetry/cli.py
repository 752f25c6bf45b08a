"""The ``telemetry`` command. The event loop (uvloop where available) is chosen here, once."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
from pydantic import ValidationError

from telemetry.config import (
    AgentConfig,
    AgentSection,
    CollectorConfig,
    ConfigError,
    format_validation_error,
    load_config,
)
from telemetry.log import configure_logging

T = TypeVar("T")

EPILOG = "Environment variables TELEMETRY_<SECTION>__<KEY> override the config file."


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _fail(message: str, status: int = 1) -> int:
    print(f"telemetry: {message}", file=sys.stderr)
    return status


# --- commands ------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    from telemetry.collector import Collector, ListenError
    from telemetry.collector.workers import WORKER_ENV, Supervisor

    config = load_config(CollectorConfig, args.config)
    configure_logging(config.log.level, config.log.format)
    workers = args.workers or config.collector.workers
    if workers < 1:
        return _fail("--workers must be at least 1", 2)
    if workers > 1 and WORKER_ENV not in os.environ:
        return run_async(lambda: Supervisor(config, args.config, workers).run())
    if WORKER_ENV in os.environ:
        structlog.contextvars.bind_contextvars(worker=int(os.environ[WORKER_ENV]))

    async def main() -> None:
        await Collector(config).run(on_started=_tune_gc)

    try:
        run_async(main)
    except ListenError as exc:
        return _fail(exc.strerror or str(exc))
    return 0


def _tune_gc() -> None:
    """A server process allocates many short-lived objects and few cycles: move what start-up
    built out of the collector's sight, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def cmd_agent(args: argparse.Namespace) -> int:
    from telemetry.agent import run_agent

    config = load_config(AgentConfig, args.config)
    configure_logging(config.log.level, config.log.format)
    return run_async(lambda: run_agent(config))


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
        help="run N collector processes sharing the ingest port (SO_REUSEPORT) under one "
        "supervisor that serves the HTTP port (default: [collector] workers, 1)",
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
