"""``telemetry relay``: consume the JetStream stream the collectors' nats sink writes and feed
the configured sinks (docs/relay.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from telemetry.cli._common import EPILOG, fail, missing_extra

#: ``typing.TYPE_CHECKING`` without importing typing (``telemetry --help`` stays cheap).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from telemetry.config import RelayConfig


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``relay`` command's parser."""
    relay = subparsers.add_parser(
        "relay",
        help="move readings from NATS JetStream into sinks",
        description="Run a relay: a durable JetStream pull consumer ([relay] durable) on the "
        "stream the collectors' nats sink writes, feeding the configured [[sinks]] through the "
        "collector's pipeline. A message is acked once every sink of its route has it; a sink "
        "failing for now gets it again later. Serves /healthz, /readyz and /metrics on the "
        "[http] port. SIGTERM or SIGINT drains and exits 0. See docs/relay.md.",
        epilog=EPILOG,
    )
    relay.add_argument("--config", "-c", type=Path, help="relay TOML file (see config/relay.toml)")
    relay.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the relay until it is told to stop; 0 after a drain."""
    import signal

    # Until the relay's own handler is in place, a SIGHUP must not end it undrained.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    status = missing_extra("telemetry relay", ("aiohttp", "prometheus_client", "nats"))
    if status is not None:
        return status
    from telemetry.collector.http_guard import DescriptorLimitError
    from telemetry.config import RelayConfig, load_config
    from telemetry.log import configure_logging
    from telemetry.relay import Relay
    from telemetry.runtime import run_async
    from telemetry.sinks.base import SinkError

    config = load_config(RelayConfig, args.config)
    check_relay_drivers(config)  # a missing driver: one line with the pip install, exit 2
    configure_logging(config.log.level, config.log.format)

    async def main() -> None:
        await Relay(config).run()

    try:
        run_async(main)
    except OSError as exc:  # the side port cannot be bound
        return fail(
            f"cannot listen on {config.http.host}:{config.http.port}: {exc.strerror or exc}"
        )
    except DescriptorLimitError as exc:
        return fail(str(exc), 2)
    except SinkError as exc:  # a sink still failing after its start-up retries
        return fail(str(exc))
    return 0


def check_relay_drivers(config: RelayConfig) -> None:
    """Raise :class:`ConfigError` naming each sink whose driver is missing, with the
    ``pip install`` that brings it (as the collector's check says it)."""
    from telemetry.config import ConfigError
    from telemetry.sinks.requirements import install_line, missing_drivers

    missing = missing_drivers(sink.type for sink in config.sinks)
    if missing:
        what = "; ".join(
            f"sink {t!r} needs {d.package} (extra {d.extra!r})" for t, d in missing.items()
        )
        extras = sorted({driver.extra for driver in missing.values()})
        raise ConfigError(f"missing sink driver: {what}; to install: {install_line(extras)}")
