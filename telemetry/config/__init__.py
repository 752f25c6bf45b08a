"""Every configuration model, strict and cheap to import: no backend client, no sink module,
nothing of the collector, and only the side's models that are asked for.

A config is read from a TOML file and then from the environment, which wins
(:mod:`.loading`). One module per concern: :mod:`.base` (the strict base, ``[log]``),
:mod:`.collector`, :mod:`.agent` and :mod:`.relay` (one side each), :mod:`.sinks`
(``[[sinks]]``, plugin configs) and :mod:`.sources` (``[[sources]]``). Every public name is
available here, so ``from telemetry.config import CollectorConfig`` is the way to import
them; the package imports the module that defines a name on first use (:func:`__getattr__`),
so that ``from telemetry.config import AgentConfig`` builds the agent's models and not the
collector's or the sinks' (an agent on a small host never loads those).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telemetry.config.agent import AgentConfig, AgentSection, SpoolConfig, parse_endpoint
    from telemetry.config.base import (
        DEFAULT_HTTP_PORT,
        DEFAULT_INGEST_PORT,
        LogConfig,
        Strict,
        check_template,
    )
    from telemetry.config.collector import (
        CollectorConfig,
        CollectorSection,
        HttpConfig,
        IngestConfig,
    )
    from telemetry.config.loading import (
        ConfigError,
        Settings,
        TomlThenEnv,
        env_overrides,
        format_validation_error,
        load_config,
    )
    from telemetry.config.relay import RelayConfig, RelayHttpConfig, RelaySection
    from telemetry.config.sinks import (
        BUILTIN_SINK_MODELS,
        BUILTIN_SINK_TYPES,
        ENTRY_POINT_GROUP,
        TEMPLATE_FIELDS,
        BuiltinSinkConfig,
        JsonlSinkConfig,
        MqttSinkConfig,
        NatsSinkConfig,
        NullSinkConfig,
        PluginSinkConfig,
        PostgresSinkConfig,
        RedisSinkConfig,
        SinkBase,
        SinkConfig,
        SqliteSinkConfig,
        StdoutSinkConfig,
        UnknownSink,
    )
    from telemetry.config.sources import (
        COMMAND_TEMPLATE_NAMES,
        FILE_TEMPLATE_NAMES,
        SYSTEM_TEMPLATE_NAMES,
        CommandSourceConfig,
        FileSourceConfig,
        PolledSourceBase,
        SimulatedSourceConfig,
        SourceConfig,
        StdinSourceConfig,
        SystemMetric,
        SystemSourceConfig,
    )
    from telemetry.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_CLOCK_SKEW
    from telemetry.protocol.framing import DEFAULT_MAX_FRAME_BYTES

#: Where each public name is defined: :func:`__getattr__` imports that module on first use.
_SOURCES: dict[str, str] = {
    # telemetry.config.agent
    "AgentConfig": "telemetry.config.agent",
    "AgentSection": "telemetry.config.agent",
    "SpoolConfig": "telemetry.config.agent",
    "parse_endpoint": "telemetry.config.agent",
    # telemetry.config.base
    "DEFAULT_HTTP_PORT": "telemetry.config.base",
    "DEFAULT_INGEST_PORT": "telemetry.config.base",
    "LogConfig": "telemetry.config.base",
    "Strict": "telemetry.config.base",
    "check_template": "telemetry.config.base",
    # telemetry.config.collector
    "CollectorConfig": "telemetry.config.collector",
    "CollectorSection": "telemetry.config.collector",
    "HttpConfig": "telemetry.config.collector",
    "IngestConfig": "telemetry.config.collector",
    # telemetry.config.loading
    "ConfigError": "telemetry.config.loading",
    "Settings": "telemetry.config.loading",
    "TomlThenEnv": "telemetry.config.loading",
    "env_overrides": "telemetry.config.loading",
    "format_validation_error": "telemetry.config.loading",
    "load_config": "telemetry.config.loading",
    # telemetry.config.relay
    "RelayConfig": "telemetry.config.relay",
    "RelayHttpConfig": "telemetry.config.relay",
    "RelaySection": "telemetry.config.relay",
    # telemetry.config.sinks
    "BUILTIN_SINK_MODELS": "telemetry.config.sinks",
    "BUILTIN_SINK_TYPES": "telemetry.config.sinks",
    "ENTRY_POINT_GROUP": "telemetry.config.sinks",
    "TEMPLATE_FIELDS": "telemetry.config.sinks",
    "BuiltinSinkConfig": "telemetry.config.sinks",
    "JsonlSinkConfig": "telemetry.config.sinks",
    "MqttSinkConfig": "telemetry.config.sinks",
    "NatsSinkConfig": "telemetry.config.sinks",
    "NullSinkConfig": "telemetry.config.sinks",
    "PluginSinkConfig": "telemetry.config.sinks",
    "PostgresSinkConfig": "telemetry.config.sinks",
    "RedisSinkConfig": "telemetry.config.sinks",
    "SinkBase": "telemetry.config.sinks",
    "SinkConfig": "telemetry.config.sinks",
    "SqliteSinkConfig": "telemetry.config.sinks",
    "StdoutSinkConfig": "telemetry.config.sinks",
    "UnknownSink": "telemetry.config.sinks",
    # telemetry.config.sources
    "COMMAND_TEMPLATE_NAMES": "telemetry.config.sources",
    "FILE_TEMPLATE_NAMES": "telemetry.config.sources",
    "SYSTEM_TEMPLATE_NAMES": "telemetry.config.sources",
    "CommandSourceConfig": "telemetry.config.sources",
    "FileSourceConfig": "telemetry.config.sources",
    "PolledSourceBase": "telemetry.config.sources",
    "SimulatedSourceConfig": "telemetry.config.sources",
    "SourceConfig": "telemetry.config.sources",
    "StdinSourceConfig": "telemetry.config.sources",
    "SystemMetric": "telemetry.config.sources",
    "SystemSourceConfig": "telemetry.config.sources",
    # telemetry.protocol
    "DEFAULT_MAX_BATCH": "telemetry.protocol",
    "DEFAULT_MAX_CLOCK_SKEW": "telemetry.protocol",
    # telemetry.protocol.framing
    "DEFAULT_MAX_FRAME_BYTES": "telemetry.protocol.framing",
}


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` (once), not every config model at once."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])


__all__ = [
    "BUILTIN_SINK_MODELS",
    "BUILTIN_SINK_TYPES",
    "COMMAND_TEMPLATE_NAMES",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_INGEST_PORT",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_CLOCK_SKEW",
    "DEFAULT_MAX_FRAME_BYTES",
    "ENTRY_POINT_GROUP",
    "FILE_TEMPLATE_NAMES",
    "SYSTEM_TEMPLATE_NAMES",
    "TEMPLATE_FIELDS",
    "AgentConfig",
    "AgentSection",
    "BuiltinSinkConfig",
    "CollectorConfig",
    "CollectorSection",
    "CommandSourceConfig",
    "ConfigError",
    "FileSourceConfig",
    "HttpConfig",
    "IngestConfig",
    "JsonlSinkConfig",
    "LogConfig",
    "MqttSinkConfig",
    "NatsSinkConfig",
    "NullSinkConfig",
    "PluginSinkConfig",
    "PolledSourceBase",
    "PostgresSinkConfig",
    "RedisSinkConfig",
    "RelayConfig",
    "RelayHttpConfig",
    "RelaySection",
    "Settings",
    "SimulatedSourceConfig",
    "SinkBase",
    "SinkConfig",
    "SourceConfig",
    "SpoolConfig",
    "SqliteSinkConfig",
    "StdinSourceConfig",
    "StdoutSinkConfig",
    "Strict",
    "SystemMetric",
    "SystemSourceConfig",
    "TomlThenEnv",
    "UnknownSink",
    "check_template",
    "env_overrides",
    "format_validation_error",
    "load_config",
    "parse_endpoint",
]
