"""Every configuration model, strict and cheap to import (no backend client, no sink module,
nothing of the collector is imported here).

A config is read from a TOML file and then from the environment, which wins
(:mod:`.loading`). One module per concern: :mod:`.base` (the strict base, ``[log]``),
:mod:`.collector` and :mod:`.agent` (one side each), :mod:`.sinks` (``[[sinks]]``, plugin
configs) and :mod:`.sources` (``[[sources]]``). Every public name is re-exported here, so
``from telemetry.config import CollectorConfig`` is the way to import them.
"""

from __future__ import annotations

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
