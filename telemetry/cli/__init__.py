"""The ``telemetry`` command: one module per subcommand, each owning its parser and its run.

How this works: :func:`build_parser` asks every command module to ``add_parser(subparsers)``;
each sets ``func`` to its ``run(args) -> int``, which :func:`main` calls. A command module
imports only the standard library at the top; what a command needs to run (the config models,
logging, the agent, the collector, aiohttp, the sinks, the bench) is imported inside its
``run``, so ``telemetry --help`` and each command load only what they use. The event loop
(uvloop where available) is chosen by :func:`telemetry.runtime.run_async`.
"""

from __future__ import annotations

import argparse
import os
import sys

from telemetry import DISTRIBUTION
from telemetry.cli import agent, bench, check_config, collect, relay, send, spool, tail
from telemetry.cli._common import EPILOG, fail

#: ``typing.TYPE_CHECKING`` without importing typing (``telemetry --help`` stays cheap).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main", "version"]

#: The command modules, in the order ``telemetry --help`` lists them.
COMMANDS = (collect, agent, relay, send, spool, tail, bench, check_config)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="telemetry",
        description="Stream sensor readings from agents to a collector and into sinks.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--version", action=_Version, help="print the distribution's name and version, exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def version() -> str:
    """``sensor-telemetry 0.1.0``: the installed distribution's name and version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return f"{DISTRIBUTION} {dist_version(DISTRIBUTION)}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return f"{DISTRIBUTION} (not installed)"


class _Version(argparse.Action):
    """``--version``: looked up only when asked for (importlib.metadata is not free)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version())
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments) names; its exit code."""
    args = build_parser().parse_args(argv)
    from telemetry.config import ConfigError

    try:
        status: int = args.func(args)
    except ConfigError as exc:
        return fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `telemetry check-config | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status
