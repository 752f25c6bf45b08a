"""``telemetry spool status``: what an agent's disk spool holds, safe while the agent runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from telemetry.cli._common import EPILOG, fail


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``spool`` command's parser and its ``status`` action's."""
    spool = subparsers.add_parser(
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
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    """Print the spool's status as text rows or JSON; 1 when there is no spool to read."""
    import json

    from telemetry.agent.spool_file import SpoolError
    from telemetry.agent.spool_status import read_status
    from telemetry.config import AgentConfig, load_config

    path = args.path
    if path is None:
        spool = load_config(AgentConfig, args.config).spool
        if spool.path is None:
            where = args.config or "the default agent config"
            return fail(f"{where} has no [spool] path: its spool is in memory, nothing to show")
        path = spool.path
    try:
        status = read_status(path)
    except SpoolError as exc:
        return fail(str(exc))
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
