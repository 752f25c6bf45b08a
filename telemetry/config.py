"""Every configuration model, strict and cheap to import (no backend client is imported here).

A config is read from a TOML file and then from the environment, which wins:
``TELEMETRY_INGEST__PORT=7700`` overrides ``[ingest] port``; lists and tables take JSON, e.g.
``TELEMETRY_SINKS='[{"type": "null"}]'``. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from telemetry.protocol.framing import DEFAULT_MAX_FRAME_BYTES
from telemetry.protocol.messages import DEFAULT_MAX_BATCH, DEFAULT_MAX_CLOCK_SKEW

DEFAULT_INGEST_PORT = 7600
DEFAULT_HTTP_PORT = 7601


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogConfig(Strict):
    """``[log]``: level and format of the structured logs (written to stderr)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: colored key=value on a terminal, JSON lines otherwise (containers).
    format: Literal["auto", "json", "console"] = "auto"


# --- collector -----------------------------------------------------------------------------


class CollectorSection(Strict):
    """``[collector]``: identity and shutdown."""

    id: str = Field(default_factory=socket.gethostname, min_length=1)
    #: Seconds a SIGTERM/SIGINT drain may take before the collector exits anyway.
    shutdown_timeout: float = Field(default=30.0, gt=0)
    #: Most bytes of a rejected reading's raw JSON kept in its dead letter.
    dead_letter_max_bytes: int = Field(default=4096, ge=0)
    #: Seconds between two ``ledger`` log events (where every received reading is).
    ledger_interval: float = Field(default=60.0, gt=0)
    #: Collector processes sharing the ingest port (SO_REUSEPORT), one per core is a good
    #: start; ``telemetry collect --workers N`` overrides it.
    workers: int = Field(default=1, ge=1)


class IngestConfig(Strict):
    """``[ingest]``: the TCP listener agents connect to, and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_INGEST_PORT, ge=0, le=65535)
    #: Bind with SO_REUSEPORT, so several collector processes can share the port.
    reuse_port: bool = False
    max_connections: int = Field(default=10_000, ge=1)
    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME_BYTES, ge=64)
    max_batch: int = Field(default=DEFAULT_MAX_BATCH, ge=1)
    #: Batches an agent may have unacked at once (sent in ``welcome``).
    window: int = Field(default=8, ge=1)
    #: Seconds without any frame (heartbeats count) before a connection is closed.
    idle_timeout: float = Field(default=60.0, gt=0)
    #: Readings stamped more than this many seconds in the future are rejected.
    max_clock_skew: float = Field(default=DEFAULT_MAX_CLOCK_SKEW, ge=0)
    #: When not empty, a ``hello`` must carry one of these tokens.
    tokens: list[str] = Field(default_factory=list)
    #: When a sink queue is full: ``backpressure`` stops reading from connections until there
    #: is room; ``nack`` answers batches at once with ``nack`` and ``retry_after_ms``.
    on_full: Literal["backpressure", "nack"] = "backpressure"
    #: The ``retry_after_ms`` of nacks (sink down, queue full, draining).
    retry_after_ms: int = Field(default=1000, ge=0)
    #: Seconds after which a connection gets ``goaway`` so agents rebalance across
    #: collectors (0: never); each connection's age is drawn within +-10% of it.
    max_connection_age: float = Field(default=0, ge=0)


class HttpConfig(Strict):
    """``[http]``: the side port with ``/healthz`` and ``/readyz``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535)


class SinkBase(Strict):
    """Keys every ``[[sinks]]`` entry takes, besides its own."""

    #: Name in logs and metrics; defaults to the sink's type.
    name: str | None = None
    #: Readings waiting for this sink before connections are paused (backpressure).
    queue_size: int = Field(default=100_000, ge=1)
    #: Most readings handed to one ``write()``.
    batch_size: int = Field(default=5_000, ge=1)
    #: Seconds the sink waits for more readings before writing a batch smaller than batch_size.
    flush_interval: float = Field(default=0.005, ge=0)
    #: Seconds a failing write is retried (exponential backoff, full jitter) before nacks.
    retry_deadline: float = Field(default=10.0, ge=0)
    #: Seconds one write may take before it counts as a transient failure.
    write_timeout: float = Field(default=30.0, gt=0)
    #: Routing: only readings whose sensor matches one of these globs (empty: every sensor).
    sensors: list[str] = Field(default_factory=list)
    #: Routing: only readings carrying all of these tags (empty: no condition).
    tags: dict[str, str] = Field(default_factory=dict)
    #: This sink takes dead letters (rejected readings with their reason) instead of readings.
    dead_letter: bool = False
    #: When false, a failure of this sink does not turn /readyz to 503.
    required: bool = True


class NullSinkConfig(SinkBase):
    """Accepts and discards everything: for benchmarks and tests."""

    type: Literal["null"]


class StdoutSinkConfig(SinkBase):
    """One JSON line per reading on standard output."""

    type: Literal["stdout"]


class JsonlSinkConfig(SinkBase):
    """One JSON line per reading appended to a file."""

    type: Literal["jsonl"]
    path: Path = Path("data/readings.jsonl")
    #: fsync after each batch: slower, survives a power cut.
    fsync: bool = False


class SqliteSinkConfig(SinkBase):
    """The embedded default: a SQLite file in WAL mode, idempotent on the reading id."""

    type: Literal["sqlite"]
    path: Path = Path("data/telemetry.db")
    #: SQLite ``PRAGMA synchronous``: ``NORMAL`` is durable against crashes of the process,
    #: ``FULL`` also against power loss.
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"


SinkConfig = Annotated[
    NullSinkConfig | StdoutSinkConfig | JsonlSinkConfig | SqliteSinkConfig,
    Field(discriminator="type"),
]


#: Sink types that store JSON documents, and so can take dead letters.
DEAD_LETTER_TYPES = frozenset({"jsonl", "stdout", "null"})


def _default_sinks() -> list[SinkConfig]:
    return [SqliteSinkConfig(type="sqlite")]


class _TomlThenEnv(BaseSettings):
    """Settings read from init kwargs (the TOML file), overridden by ``TELEMETRY_*``."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class CollectorConfig(_TomlThenEnv):
    """The whole collector config: ``config/collector.toml``."""

    collector: CollectorSection = Field(default_factory=CollectorSection)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks, min_length=1)

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        seen: set[str] = set()
        for sink in sinks:
            name = sink.name or sink.type
            if name in seen:
                raise ValueError(f"two sinks are named {name!r}: give each a distinct name")
            seen.add(name)
            if sink.dead_letter and sink.type not in DEAD_LETTER_TYPES:
                raise ValueError(
                    f"sink {name!r}: type {sink.type!r} cannot take dead letters; use one of "
                    f"{', '.join(sorted(DEAD_LETTER_TYPES))}"
                )
        if all(sink.dead_letter for sink in sinks):
            raise ValueError("every sink is a dead-letter sink: readings would go nowhere")
        return sinks


# --- agent ---------------------------------------------------------------------------------


class AgentSection(Strict):
    """``[agent]``: identity, where to send, how to batch and retry."""

    id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    #: Collectors as ``host:port``, tried in turn on reconnect.
    endpoints: list[str] = Field(
        default_factory=lambda: [f"127.0.0.1:{DEFAULT_INGEST_PORT}"], min_length=1
    )
    token: str | None = None
    #: Most readings per batch (the collector's ``max_batch`` caps it too).
    batch_size: int = Field(default=500, ge=1)
    #: Seconds a partial batch waits for more readings before it is sent.
    flush_interval: float = Field(default=1.0, gt=0)
    #: Most unacked batches in flight (the collector's ``window`` caps it too).
    window: int = Field(default=8, ge=1)
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Seconds without an ack for the oldest batch in flight before the connection is
    #: considered dead and re-established.
    ack_timeout: float = Field(default=30.0, gt=0)
    #: Seconds of silence after which an empty frame keeps the connection alive.
    heartbeat_interval: float = Field(default=20.0, gt=0)
    #: Reconnect backoff: full jitter between 0 and min(max, min * 2**attempt) seconds.
    reconnect_min: float = Field(default=0.1, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    #: Seconds a clean stop (stdin EOF, SIGTERM) waits for outstanding acks.
    shutdown_timeout: float = Field(default=30.0, gt=0)

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            parse_endpoint(endpoint)
        return endpoints


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``; ValueError when malformed."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


class SpoolConfig(Strict):
    """``[spool]``: unacked batches kept for resending."""

    #: Readings held (unacked and not yet sent); beyond it the oldest are dropped and counted.
    max_readings: int = Field(default=1_000_000, ge=1)


class SimulatedSourceConfig(Strict):
    """Made-up readings: for a first try, demos and load."""

    type: Literal["simulated"]
    #: Sensors simulated; names come from ``sensor`` with ``{agent}`` and ``{n}`` filled in.
    sensors: int = Field(default=3, ge=1)
    sensor: str = "{agent}/sim-{n}"
    metric: str = "temperature"
    unit: str = "°C"
    #: Seconds between two readings of one sensor.
    interval: float = Field(default=1.0, gt=0)
    #: Stop after this many readings in all (0: never).
    count: int = Field(default=0, ge=0)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        # Fail at load time, not in the running source: only {agent} and {n} are known.
        try:
            sensor.format(agent="agent", n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"sensor template {sensor!r} may only use {{agent}} and {{n}} ({exc!r})"
            ) from None
        return sensor


class StdinSourceConfig(Strict):
    """JSON lines on standard input, one reading per line; EOF ends the agent cleanly."""

    type: Literal["stdin"]
    tags: dict[str, str] = Field(default_factory=dict)


SourceConfig = Annotated[SimulatedSourceConfig | StdinSourceConfig, Field(discriminator="type")]


class AgentConfig(_TomlThenEnv):
    """The whole agent config: ``config/agent.toml``."""

    agent: AgentSection = Field(default_factory=AgentSection)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sources: list[SourceConfig] = Field(default_factory=list)


# --- loading -------------------------------------------------------------------------------


class ConfigError(Exception):
    """A config file that cannot be read or does not validate; the message says why."""


Settings = TypeVar("Settings", bound=_TomlThenEnv)


def load_config(model: type[Settings], path: Path | str | None) -> Settings:
    """Read ``path`` (TOML; None: defaults only), apply ``TELEMETRY_*`` and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None


def format_validation_error(exc: ValidationError, path: Path | str | None) -> str:
    """One line per problem, each naming the key: ``ingest.prot: unknown key``."""
    where = f"config {path}" if path is not None else "config"
    lines = [f"{where} is invalid:"]
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)
