"""The TLS flags ``send``, ``bench`` and ``tail`` share (docs/security.md)."""

from __future__ import annotations

import argparse
from typing import Any


def add_tls_arguments(parser: argparse.ArgumentParser, *, switch: bool = True) -> None:
    """``--tls`` (when ``switch``), ``--ca-file``, ``--cert-file``, ``--key-file`` and
    ``--server-name``; any of the last four turns TLS on too."""
    group = parser.add_argument_group("TLS (docs/security.md)")
    if switch:
        group.add_argument(
            "--tls",
            action="store_true",
            help="connect over TLS (implied by the other TLS flags); the collector's "
            "certificate is checked against the system's trust store or --ca-file",
        )
    group.add_argument("--ca-file", metavar="PEM", help="CA certificate(s) to trust")
    group.add_argument("--cert-file", metavar="PEM", help="client certificate, for mutual TLS")
    group.add_argument(
        "--key-file", metavar="PEM", help="the client certificate's key (default: in --cert-file)"
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        help="name the collector's certificate must carry (default: the host connected to)",
    )


def tls_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``[agent.tls]`` keys the flags give; None when no TLS flag was given."""
    keys = {
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
        "server_name": args.server_name,
    }
    given = {key: value for key, value in keys.items() if value is not None}
    if not given and not getattr(args, "tls", False):
        return None
    return given
