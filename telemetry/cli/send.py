"""``telemetry send``: send one reading as an acked batch and wait for its ack."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from telemetry.cli._common import EPILOG, fail, split_tag
from telemetry.cli._tls import add_tls_arguments, tls_flags

#: ``typing.TYPE_CHECKING`` without importing typing (``telemetry --help`` stays cheap).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``send`` command's parser."""
    send = subparsers.add_parser(
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
    send.add_argument("--value", "-v", type=_finite, help="the value (a finite number)")
    send.add_argument("--metric", "-m")
    send.add_argument("--unit", "-u")
    send.add_argument(
        "--ts",
        type=_timestamp,
        help="RFC 3339 timestamp with offset, or Unix epoch seconds (default: receive time)",
    )
    send.add_argument("--tag", "-t", action="append", help="tag key=value (repeatable)")
    send.add_argument("--json", help="the whole reading as a JSON object ('-' reads stdin)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    add_tls_arguments(send)
    send.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Send the reading; 0 accepted, 1 rejected, 2 not delivered."""
    from pydantic import ValidationError

    from telemetry.agent import SendError, send_once
    from telemetry.config import (
        AgentConfig,
        AgentSection,
        ConfigError,
        format_validation_error,
        load_config,
    )
    from telemetry.log import configure_logging
    from telemetry.runtime import run_async

    section = load_config(AgentConfig, args.config).agent if args.config else AgentSection()
    updates: dict[str, Any] = {}
    if args.endpoint:
        updates["endpoints"] = args.endpoint
    if args.agent_id:
        updates["id"] = args.agent_id
    if args.token:
        updates["token"] = args.token
    flags = tls_flags(args)
    if flags is not None:  # over the config file's [agent.tls], if it has one
        updates["tls"] = {**(section.tls.model_dump() if section.tls else {}), **flags}
    try:
        section = AgentSection.model_validate({**section.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, None)) from None
    reading = _reading_from_args(args)
    configure_logging("warning", "auto")
    try:
        ack = run_async(lambda: send_once(section, [reading], args.timeout))
    except SendError as exc:
        return fail(f"not delivered: {exc}", 2)
    if ack.rejected:
        return fail("rejected: " + "; ".join(ack.rejected[0].errors), 1)
    print(f"accepted {ack.accepted} reading(s), seq {ack.seq}")
    return 0


def _finite(text: str) -> float:
    """``--value``: a finite number (NaN and infinities are not readings)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (no NaN or infinity)")
    return value


def _timestamp(text: str) -> str | int | float:
    """``--ts``: epoch seconds go as a JSON number (as the wire takes them: a numeric string
    is not a timestamp there); anything else as the RFC 3339 string it should be."""
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of epoch seconds")
    return int(text) if text.strip().lstrip("+-").isdigit() else number


def _not_finite(constant: str) -> Any:
    raise ValueError(f"{constant} is not a finite number (JSON has no NaN or infinity)")


def _reading_from_args(args: argparse.Namespace) -> dict[str, Any]:

    from telemetry.config import ConfigError

    if args.json is not None:
        raw = sys.stdin.read() if args.json == "-" else args.json
        try:
            reading = json.loads(raw, parse_constant=_not_finite)
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
        reading["tags"] = dict(split_tag(tag) for tag in args.tag)
    return reading
