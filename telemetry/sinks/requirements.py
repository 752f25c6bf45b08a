"""Which extra a built-in sink's driver comes from, and a check that it is installed.

``telemetry check-config`` and ``telemetry collect`` both call :func:`check_sink_drivers` on a
loaded collector config, so that a sink whose client library is missing is one line naming
the ``pip install`` that fixes it (exit 2), before anything starts, instead of a
``ModuleNotFoundError`` traceback once the collector builds its sinks. Only
:func:`importlib.util.find_spec` is used: nothing is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import NamedTuple

from telemetry import DISTRIBUTION
from telemetry.config import AgentConfig, CollectorConfig
from telemetry.config.loading import ConfigError

__all__ = ["DRIVERS", "Driver", "check_sink_drivers", "install_line", "missing_drivers"]


class Driver(NamedTuple):
    """A sink type's client library: the module it imports, its distribution, the extra."""

    module: str
    package: str
    extra: str


#: Built-in sink type -> its driver. Types not listed (sqlite, jsonl, stdout, null) need
#: nothing beyond the base install; plugins bring their own dependencies.
DRIVERS: dict[str, Driver] = {
    "postgres": Driver("asyncpg", "asyncpg", "postgres"),
    "nats": Driver("nats", "nats-py", "nats"),
    "mqtt": Driver("aiomqtt", "aiomqtt", "mqtt"),
    "redis": Driver("redis", "redis", "redis"),
}


def install_line(extras: Iterable[str]) -> str:
    """``pip install 'sensor-telemetry[postgres,nats]'``."""
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def missing_drivers(sink_types: Iterable[str]) -> dict[str, Driver]:
    """The configured sink types whose driver is not installed, in config order, each once."""
    missing: dict[str, Driver] = {}
    for sink_type in sink_types:
        driver = DRIVERS.get(sink_type)
        if driver is not None and sink_type not in missing and not _installed(driver.module):
            missing[sink_type] = driver
    return missing


def check_sink_drivers(config: CollectorConfig | AgentConfig) -> None:
    """Raise :class:`ConfigError`, one line naming each sink, its driver, its extra and the
    ``pip install`` that brings them, if a configured sink's driver is missing. An agent's
    config has no sinks: nothing to check."""
    if not isinstance(config, CollectorConfig):
        return
    missing = missing_drivers(sink.type for sink in config.sinks)
    if not missing:
        return
    what = "; ".join(
        f"sink {sink_type!r} needs {driver.package} (extra {driver.extra!r})"
        for sink_type, driver in missing.items()
    )
    extras = sorted({driver.extra for driver in missing.values()})
    raise ConfigError(f"missing sink driver: {what}; to install: {install_line(extras)}")
