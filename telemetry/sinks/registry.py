"""Sink names to classes, resolved lazily (uvicorn's importer pattern).

Built-in sinks are listed as ``"module:Class"`` strings, so an optional backend costs nothing
until a config chooses it. Third-party sinks are found through the ``telemetry.sinks``
entry-point group (:func:`telemetry.config.sinks.plugin_entry_point`, which config validation
uses too). Nothing registers itself at import time. Every sink class, built-in or plugin,
declares its config model as ``config_model``.
"""

from __future__ import annotations

import importlib
from typing import Any

from telemetry.config.sinks import (
    ENTRY_POINT_GROUP,
    SinkConfig,
    UnknownSink,
    plugin_entry_point,
)
from telemetry.sinks.base import Sink

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "UnknownSink",
    "build_sink",
    "import_string",
    "sink_class",
]

BUILTIN: dict[str, str] = {
    "null": "telemetry.sinks.null:NullSink",
    "stdout": "telemetry.sinks.stdout:StdoutSink",
    "jsonl": "telemetry.sinks.jsonl:JsonlSink",
    "sqlite": "telemetry.sinks.sqlite:SqliteSink",
    "postgres": "telemetry.sinks.postgres:PostgresSink",
    "nats": "telemetry.sinks.nats:NatsSink",
    "mqtt": "telemetry.sinks.mqtt:MqttSink",
    "redis": "telemetry.sinks.redis:RedisSink",
}


def import_string(target: str) -> Any:
    """Import ``"package.module:Attribute"``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ImportError(f"{target!r} is not 'module:Attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None


def sink_class(name: str) -> type[Sink]:
    """The class registered under ``name``: built-in first, then entry points."""
    if name in BUILTIN:
        cls: type[Sink] = import_string(BUILTIN[name])
        return cls
    plugin: type[Sink] = plugin_entry_point(name).load()
    return plugin


def build_sink(config: SinkConfig) -> Sink:
    """Build a sink from its validated config model (which carries ``type``)."""
    cls = sink_class(config.type)
    return cls(config)  # type: ignore[call-arg]
