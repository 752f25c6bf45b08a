"""``telemetry check-config``: validate a config file, print the effective config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from telemetry.cli._common import EPILOG


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``check-config`` command's parser."""
    check = subparsers.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description="Validate a collector, agent or relay config file with the environment "
        "overrides applied; print the effective config as JSON (secrets as ***), or the "
        "errors.",
        epilog=EPILOG,
    )
    check.add_argument("config", nargs="?", type=Path, help="TOML file (default: defaults)")
    check.add_argument(
        "--kind",
        choices=["auto", "collector", "agent", "relay"],
        default="auto",
        help="which config it is (auto: agent if it has [agent] or [[sources]], relay if it "
        "has [relay])",
    )
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the effective config as JSON (a bad one raises ConfigError: exit 2)."""
    from telemetry.cli.relay import check_relay_drivers
    from telemetry.config import AgentConfig, CollectorConfig, RelayConfig, load_config
    from telemetry.redact import redact_config
    from telemetry.sinks.requirements import check_sink_drivers

    kind = args.kind
    if kind == "auto":
        kind = _guess_kind(args.config)
    config: CollectorConfig | AgentConfig | RelayConfig
    if kind == "relay":
        relay = load_config(RelayConfig, args.config)
        check_relay_drivers(relay)
        config = relay
    else:
        model: type[CollectorConfig] | type[AgentConfig] = (
            AgentConfig if kind == "agent" else CollectorConfig
        )
        side = load_config(model, args.config)
        check_sink_drivers(side)  # a missing driver: one line with the pip install, exit 2
        config = side
    print(f"# {kind} config {args.config or '(defaults)'}: valid", file=sys.stderr)
    # Secrets (tokens, passwords, DSNs, URL passwords) are printed as "***".
    print(json.dumps(redact_config(config.model_dump(mode="json")), indent=2, ensure_ascii=False))
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
    if "relay" in data:
        return "relay"
    return "agent" if {"agent", "sources", "spool"} & set(data) else "collector"
