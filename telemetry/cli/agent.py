"""``telemetry agent``: run an agent fed by its sources until they end or a signal comes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from telemetry.cli._common import EPILOG, fail, missing_extra

#: ``typing.TYPE_CHECKING`` without importing typing (``telemetry --help`` stays cheap).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from telemetry.config import AgentConfig


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``agent`` command's parser."""
    agent = subparsers.add_parser(
        "agent",
        help="run an agent",
        description="Run an agent: read its sources, batch readings, send them to the "
        "collector and resend until acked. Exits 0 once every reading is acked after its "
        "sources end (stdin EOF) or on SIGTERM, 1 if some were still unacked at the deadline. "
        "SIGHUP re-reads --config and restarts only the sources whose config changed. "
        "With --test: print one round of the sources' readings as JSON lines and exit "
        "(0; 1 if a sample failed; 2 on a bad config), with no collector and no spool.",
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
    agent.add_argument(
        "--test",
        action="store_true",
        help="dry run: print one round of every source's readings (the JSON each would be "
        "sent as, one per line) on stdout and exit; nothing is sent or spooled",
    )
    agent.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the agent; the process leaves with its exit code (see :func:`_exit_now`)."""
    # Until the agent's own handler is in place, a SIGHUP must not end it undrained.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from telemetry.agent import run_agent
    from telemetry.log import configure_logging
    from telemetry.runtime import run_async

    config = _agent_config(args)
    configure_logging(config.log.level, config.log.format)
    if not config.sources:
        return fail(
            "no sources: give --source system (or simulated, stdin), or a --config file "
            "with [[sources]]",
            2,
        )
    if args.test:
        return _test_round(config)
    if (
        config.agent.http is not None
        and (missing := missing_extra("[agent.http]", ("prometheus_client",))) is not None
    ):
        return missing

    async def main() -> None:
        # Leave from inside the loop: closing it first waits for the executor's threads, and
        # a name lookup stuck in one (a collector whose DNS name stopped resolving) can take
        # longer than any stop timeout.
        _exit_now(await run_agent(config, reload=lambda: _agent_config(args)))

    run_async(main)
    return 1  # not reached: main() leaves the process


def _test_round(config: AgentConfig) -> int:
    """``--test``: one round of readings on stdout; no collector, no spool."""
    from telemetry.agent.test_mode import run_test_round
    from telemetry.runtime import run_async

    async def main() -> int:
        return await run_test_round(config, sys.stdout)

    return run_async(main)


def _exit_now(status: int) -> NoReturn:
    """Leave the process at once, once everything is said and closed.

    A name lookup still running in a thread pool (a collector whose DNS name stopped
    resolving) would otherwise hold the exit: the pool's threads are joined when the loop
    closes and when the process ends, and a stuck lookup can take tens of seconds, past any
    stop timeout.
    """
    import contextlib
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    """The agent config file (or the defaults) with the command line's overrides applied.

    ``--source`` replaces the file's ``[[sources]]``; ``--endpoint`` its endpoints.
    """
    from pydantic import TypeAdapter, ValidationError

    from telemetry.config import (
        AgentConfig,
        AgentSection,
        ConfigError,
        SourceConfig,
        format_validation_error,
        load_config,
    )

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
