"""``telemetry tail``: print live readings from a running collector (the client is
:mod:`telemetry.tail`)."""

from __future__ import annotations

import argparse
import os

from telemetry.cli._common import missing_extra, split_tag
from telemetry.cli._tls import add_tls_arguments, tls_flags

#: The collector's HTTP side port on this host: ``telemetry.config.DEFAULT_HTTP_PORT``, written
#: out so that ``telemetry --help`` does not import the config models (tests/unit/test_cli.py
#: checks the two agree).
DEFAULT_URL = "http://127.0.0.1:7601"
#: The environment variable read for the token when ``--token`` is not given.
TOKEN_ENV = "TELEMETRY_TAIL_TOKEN"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``tail`` command's parser."""
    tail = subparsers.add_parser(
        "tail",
        help="print live readings from a running collector",
        description="Print readings as a running collector receives them, from its HTTP side "
        "port (filtered there). Aligned, colored columns on a terminal (NO_COLOR turns colors "
        "off); one JSON line per reading when piped. Readings the collector had to drop "
        "because this reader was too slow are reported on stderr. Anything not printable the "
        "collector sends is printed escaped.",
        epilog="Examples: telemetry tail --sensor 'greenhouse-*' --tag site=north; "
        "telemetry tail --agent pi-3 | jq .value",
    )
    tail.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the collector's HTTP side port (default {DEFAULT_URL})",
    )
    tail.add_argument("--sensor", "-s", action="append", help="sensor glob (repeatable: any)")
    tail.add_argument("--agent", "-a", action="append", help="agent glob (repeatable: any)")
    tail.add_argument(
        "--tag", "-t", action="append", help="tag key=glob (repeatable: all must match)"
    )
    tail.add_argument("--count", "-n", type=int, default=0, help="exit 0 after this many readings")
    tail.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    add_tls_arguments(tail, switch=False)  # TLS: an https:// --url
    tail.add_argument(
        "--token",
        help=f"bearer token for a collector with [http] tokens (default: ${TOKEN_ENV}; the "
        "variable keeps it out of the process list)",
    )
    tail.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print readings until ``--count`` or the end of the stream; the exit code of the tail."""
    status = missing_extra("telemetry tail", ("aiohttp",))
    if status is not None:
        return status
    from telemetry.config import ConfigError
    from telemetry.config.tls import ClientTlsConfig
    from telemetry.runtime import run_async
    from telemetry.tail import tail
    from telemetry.tls import client_tls

    for tag in args.tag or []:
        split_tag(tag)
    flags = tls_flags(args)
    https = args.url.lower().startswith("https://")
    if flags is not None and not https:
        raise ConfigError(
            "--ca-file, --cert-file, --key-file and --server-name need an https:// --url"
        )
    tls = client_tls(ClientTlsConfig(**(flags or {})), "--url https") if https else None
    json_lines = True if args.json else None
    return run_async(
        lambda: tail(
            args.url,
            sensors=args.sensor or [],
            agents=args.agent or [],
            tags=args.tag or [],
            count=args.count,
            json_lines=json_lines,
            tls=tls,
            token=args.token or os.environ.get(TOKEN_ENV) or None,
        )
    )
