"""Every configuration model, strict and cheap to import (no backend client is imported here).

A config is read from a TOML file and then from the environment, which wins:
``TELEMETRY_INGEST__PORT=7700`` overrides ``[ingest] port``; lists and tables take JSON, e.g.
``TELEMETRY_SINKS='[{"type": "null"}]'``. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
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
    #: Collector processes behind one ingest port (a supervisor accepts and hands connections
    #: to them in turn); one per core is a good start. ``telemetry collect --workers N``
    #: overrides it.
    workers: int = Field(default=1, ge=1)


class IngestConfig(Strict):
    """``[ingest]``: the TCP listener agents connect to, and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_INGEST_PORT, ge=0, le=65535)
    #: Bind with SO_REUSEPORT, so several collector processes you start yourself can share the
    #: port (the kernel spreads connections by hash; ``workers`` balances them evenly).
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
    #: No wait for a fuller batch: a write costs nothing, and records held for it only cost
    #: the collector (in benchmarks, ~10% more CPU per reading with the 5 ms of other sinks).
    flush_interval: float = Field(default=0.0, ge=0)


class StdoutSinkConfig(SinkBase):
    """One JSON line per reading on standard output."""

    type: Literal["stdout"]


class JsonlSinkConfig(SinkBase):
    """One JSON line per reading appended to a file."""

    type: Literal["jsonl"]
    path: Path = Path("data/readings.jsonl")
    #: fsync after each batch: slower, survives a power cut.
    fsync: bool = False
    #: Rotate the file before it would grow past this many bytes (0: never by size).
    rotate_bytes: int = Field(default=0, ge=0)
    #: Rotate when the wall clock enters a new period of this many seconds, counted from the
    #: Unix epoch in UTC (86400: at midnight UTC; 0: never by time).
    rotate_interval: float = Field(default=0, ge=0)
    #: Gzip rotated files (``readings-20261127T071502.123456Z.jsonl.gz``).
    compress: bool = True
    #: Rotated files to keep, oldest deleted first (0: keep all).
    keep: int = Field(default=0, ge=0)


class SqliteSinkConfig(SinkBase):
    """The embedded default: a SQLite file in WAL mode, idempotent on the reading id."""

    type: Literal["sqlite"]
    path: Path = Path("data/telemetry.db")
    #: SQLite ``PRAGMA synchronous``: ``NORMAL`` is durable against crashes of the process,
    #: ``FULL`` also against power loss.
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"


#: Fields a sink's subject/topic template may use; values are escaped (docs/sinks.md).
TEMPLATE_FIELDS = ("agent", "sensor", "metric", "unit")


def check_template(template: str, samples: dict[str, Any], *, what: str = "template") -> str:
    """Fail at load time, not in the running sink or source, on a placeholder the template
    cannot have: ``template`` is formatted with ``samples``, a value for each field it may use."""
    try:
        template.format(**samples)
    except (KeyError, IndexError, ValueError) as exc:
        allowed = ", ".join("{" + name + "}" for name in samples)
        raise ValueError(f"{what} {template!r} may only use {allowed} ({exc!r})") from None
    return template


def _check_sink_template(template: str) -> str:
    """Refuse a template that names a field other than :data:`TEMPLATE_FIELDS`."""
    return check_template(template, dict.fromkeys(TEMPLATE_FIELDS, "x"))


_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class PostgresSinkConfig(SinkBase):
    """PostgreSQL through asyncpg: COPY into a staging table, then insert ignoring duplicates."""

    type: Literal["postgres"]
    #: libpq connection string or URI; None: env ``TELEMETRY_POSTGRES_DSN``, else the libpq
    #: environment variables (``PGHOST``, ``PGUSER``, ``PGDATABASE``...).
    dsn: SecretStr | None = None
    table: str = Field(default="readings", pattern=_SQL_NAME)
    schema_: str = Field(default="public", pattern=_SQL_NAME, alias="schema")
    #: Connections the pool keeps open, and the most it opens.
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=4, ge=1)
    #: Create the schema and table at start when missing.
    create_table: bool = True
    #: Make the table a TimescaleDB hypertable on ``ts`` when the extension is installed.
    hypertable: bool = True
    #: Seconds to wait for a connection at start and in each write.
    connect_timeout: float = Field(default=10.0, gt=0)

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @field_validator("pool_max")
    @classmethod
    def _pool_bounds(cls, pool_max: int, info: ValidationInfo) -> int:
        pool_min = info.data.get("pool_min", 0)
        if pool_max < pool_min:
            raise ValueError(f"pool_max {pool_max} is below pool_min {pool_min}")
        return pool_max


class NatsSinkConfig(SinkBase):
    """NATS JetStream: one message per reading, ``Nats-Msg-Id`` = reading id."""

    type: Literal["nats"]
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    stream: str = Field(default="TELEMETRY", pattern=r"^[^\s.*>/\\]{1,255}$")
    #: The stream's subjects, when the sink creates it.
    subjects: list[str] = Field(default_factory=lambda: ["telemetry.>"], min_length=1)
    #: Subject of each reading; field values are escaped so each stays one token.
    subject: str = "telemetry.{agent}.{sensor}"
    #: Create the stream at start when it does not exist (an existing one is left as it is).
    create_stream: bool = True
    #: Seconds JetStream remembers a ``Nats-Msg-Id`` to drop a duplicate (stream setting).
    duplicate_window: float = Field(default=120.0, gt=0)
    #: Seconds a batch may wait for all of its PubAcks.
    ack_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Credentials, when the server wants them.
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, subject: str) -> str:
        return _check_sink_template(subject)


class MqttSinkConfig(SinkBase):
    """MQTT through aiomqtt: one QoS 1 message per reading."""

    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    #: Topic of each reading; field values are escaped so each stays one level.
    topic: str = "telemetry/{agent}/{sensor}"
    qos: Literal[0, 1, 2] = 1
    #: Also publish each sensor's newest reading of a batch, retained, to ``latest_topic``.
    retain_latest: bool = False
    #: Topic of the retained latest reading (None: ``topic`` + ``"/latest"``).
    latest_topic: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: MQTT client id (None: a random one).
    client_id: str | None = None
    keepalive: int = Field(default=60, ge=1)
    #: Seconds a batch may wait for all of its PUBACKs (and a connect).
    ack_timeout: float = Field(default=10.0, gt=0)

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, topic: str) -> str:
        return _check_sink_template(topic)

    @field_validator("latest_topic")
    @classmethod
    def _latest(cls, value: str | None) -> str | None:
        return None if value is None else _check_sink_template(value)


class RedisSinkConfig(SinkBase):
    """Redis streams through redis.asyncio: one ``XADD`` per reading, one MULTI per batch."""

    type: Literal["redis"]
    #: ``redis://[user@]host:port/db`` (``rediss://`` for TLS); the password goes in ``password``.
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    #: The stream's key.
    stream: str = Field(default="telemetry", min_length=1)
    #: Trim the stream to about this many entries (``MAXLEN ~``); None: never trim.
    maxlen: int | None = Field(default=1_000_000, ge=1)
    #: Seconds to connect and for each command.
    timeout: float = Field(default=10.0, gt=0)


class PluginSinkConfig(SinkBase):
    """Base of third-party sink configs: ``type`` is the plugin's entry-point name.

    A plugin declares its own model as its sink class's ``config_model`` attribute, subclassing
    this (and narrowing ``type`` to ``Literal["its-name"]``). A plugin without one takes only
    the keys every sink takes.
    """

    type: str


BuiltinSinkConfig = Annotated[
    NullSinkConfig
    | StdoutSinkConfig
    | JsonlSinkConfig
    | SqliteSinkConfig
    | PostgresSinkConfig
    | NatsSinkConfig
    | MqttSinkConfig
    | RedisSinkConfig,
    Field(discriminator="type"),
]

_BUILTIN_SINK_ADAPTER: TypeAdapter[Any] = TypeAdapter(BuiltinSinkConfig)
#: The sink types this module knows; any other ``type`` is looked up as a plugin.
BUILTIN_SINK_TYPES: frozenset[str] = frozenset(
    tag
    for member in get_args(get_args(BuiltinSinkConfig)[0])
    for tag in get_args(member.model_fields["type"].annotation)
)


def _literal(message: str) -> str:
    # PydanticCustomError formats {names} in its message: keep braces literal.
    return message.replace("{", "{{").replace("}", "}}")


def _plugin_config_model(sink_type: str) -> type[PluginSinkConfig]:
    """The config model of the plugin sink named ``sink_type`` (imports the plugin)."""
    from telemetry.sinks.registry import UnknownSink, sink_class  # lazy: only for plugins

    try:
        cls = sink_class(sink_type)
    except UnknownSink as exc:
        raise PydanticCustomError("unknown_sink", _literal(str(exc))) from None
    except Exception as exc:  # a broken plugin: say which, not a traceback
        message = f"sink plugin {sink_type!r} failed to load: {exc!r}"
        raise PydanticCustomError("plugin_error", _literal(message)) from None
    model = getattr(cls, "config_model", PluginSinkConfig)
    if not (isinstance(model, type) and issubclass(model, PluginSinkConfig)):
        message = f"sink plugin {sink_type!r}: config_model must subclass PluginSinkConfig"
        raise PydanticCustomError("plugin_error", message)
    return model


def _validate_sink_config(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # Built-in types go through the discriminated union; any other type string is a plugin,
    # resolved (imported) only now, so config.py stays cheap to import.
    if isinstance(value, dict):
        sink_type = value.get("type")
        if isinstance(sink_type, str) and sink_type not in BUILTIN_SINK_TYPES:
            return _plugin_config_model(sink_type).model_validate(value)
        return _BUILTIN_SINK_ADAPTER.validate_python(value)
    return handler(value)


#: One ``[[sinks]]`` entry: a built-in sink's config, or a plugin's (``PluginSinkConfig``).
SinkConfig = Annotated[
    BuiltinSinkConfig | SerializeAsAny[PluginSinkConfig],
    WrapValidator(_validate_sink_config),
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
    #: Seconds between two ``ledger`` log events (reading counters); 0: only at exit.
    ledger_interval: float = Field(default=60.0, ge=0)

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
    """``[spool]``: unacked batches kept for resending (see ``docs/delivery.md``)."""

    #: SQLite file of a disk spool: unacked batches, the seq counter and the ledger survive
    #: restarts and crashes. Unset: the spool is in memory and lost with the process.
    path: Path | None = None
    #: Readings held (unacked and not yet sent); beyond it the oldest are dropped and counted.
    max_readings: int = Field(default=1_000_000, ge=1)
    #: Bytes of encoded batches held; beyond it the oldest are dropped and counted.
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)


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
        # {n} is a number: a template may format it, e.g. "sim-{n:02d}".
        return check_template(sensor, {"agent": "agent", "n": 1}, what="sensor template")


class StdinSourceConfig(Strict):
    """JSON lines on standard input, one reading per line; EOF ends the agent cleanly."""

    type: Literal["stdin"]
    tags: dict[str, str] = Field(default_factory=dict)


def _check_template(template: str, names: tuple[str, ...]) -> str:
    """A polled source's sensor template may only use its own placeholders."""
    return check_template(template, dict.fromkeys(names, "x"), what="sensor template")


class PolledSourceBase(Strict):
    """Keys of every source that takes a sample on an interval (``system``, ``file``,
    ``command``). A failed sample (an exception, a timeout, an unreadable file) is logged
    and counted, and the next one is taken on time."""

    #: Seconds between two samples.
    interval: float = Field(default=10.0, gt=0)
    #: Seconds one sample may take; past it the sample counts as failed (a command is killed).
    timeout: float = Field(default=5.0, gt=0)
    #: Added to every reading's tags (a reading's own tag with the same key wins).
    tags: dict[str, str] = Field(default_factory=dict)


SystemMetric = Literal["cpu", "load", "memory", "swap", "disk", "net", "temperature", "fan"]
SYSTEM_TEMPLATE_NAMES = ("agent", "host", "name", "metric", "device")


class SystemSourceConfig(PolledSourceBase):
    """Host metrics through psutil: CPU, load, memory, disks, network rates, temperatures,
    fans (the last two where the host has them)."""

    type: Literal["system"]
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (e.g. ``cpu``, ``disk:/``,
    #: ``net:eth0:rx``, ``temp:coretemp:Core 0``), ``{metric}``, ``{device}``.
    sensor: str = "{agent}/{name}"
    #: Which groups to read (default: all).
    metrics: list[SystemMetric] = Field(default_factory=lambda: list(get_args(SystemMetric)))
    #: Mount points whose usage is read.
    disks: list[str] = Field(default_factory=lambda: ["/"])
    #: Network interfaces (empty: every interface but loopback).
    interfaces: list[str] = Field(default_factory=list)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, SYSTEM_TEMPLATE_NAMES)


FILE_TEMPLATE_NAMES = ("agent", "host", "name", "parent", "path")


class FileSourceConfig(PolledSourceBase):
    """A sysfs-style file (or every file a glob matches) read on an interval."""

    type: Literal["file"]
    #: The file, or a glob such as ``/sys/bus/w1/devices/28-*/w1_slave`` (expanded each time).
    path: str = Field(min_length=1)
    #: ``number``: the file holds one number; ``w1_slave``: the 1-Wire thermometer format
    #: (value in °C, a failed CRC is a failed read); ``auto``: by the content.
    format: Literal["auto", "number", "w1_slave"] = "auto"
    #: value = number * scale + offset (e.g. millidegrees: scale 0.001).
    scale: float = 1.0
    offset: float = 0.0
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (file name), ``{parent}`` (its
    #: directory's name, e.g. ``thermal_zone0`` or ``28-000005e2fdc3``), ``{path}``.
    sensor: str = "{agent}/{parent}"
    metric: str | None = None
    unit: str | None = None
    timeout: float = Field(default=2.0, gt=0)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, FILE_TEMPLATE_NAMES)


COMMAND_TEMPLATE_NAMES = ("agent", "host", "name")


class CommandSourceConfig(PolledSourceBase):
    """A command run on an interval, its standard output parsed as readings."""

    type: Literal["command"]
    #: argv list, run without a shell; a string is split like a shell would (``shlex``) but
    #: still run without one, unless ``shell = true``.
    command: list[str] | str
    #: Run ``command`` (a string) through ``/bin/sh -c``: pipes and globs, at your own risk.
    shell: bool = False
    #: ``number``: the output (or the first group of ``pattern``) is one number;
    #: ``json``: one reading object, an array of them, or JSON lines.
    parse: Literal["number", "json"] = "number"
    #: With ``parse = "number"``: a regular expression whose first group (or whole match)
    #: is the number, e.g. ``temp=([0-9.]+)`` for ``vcgencmd measure_temp``.
    pattern: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (the program's file name); with
    #: ``parse = "json"`` only for readings without a ``sensor``.
    sensor: str = "{agent}/{name}"
    metric: str | None = None
    unit: str | None = None
    #: Most bytes of output read; more is a failed run.
    max_output: int = Field(default=1024 * 1024, ge=1)
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, COMMAND_TEMPLATE_NAMES)

    @field_validator("command")
    @classmethod
    def _not_empty(cls, command: list[str] | str) -> list[str] | str:
        if not command or (isinstance(command, str) and not command.strip()):
            raise ValueError("command is empty")
        return command

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            import re

            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regex: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _shell_takes_a_string(self) -> CommandSourceConfig:
        if self.shell and not isinstance(self.command, str):
            raise ValueError("with shell = true, command must be one string")
        if self.pattern is not None and self.parse != "number":
            raise ValueError('pattern only applies to parse = "number"')
        return self

    @property
    def argv(self) -> list[str]:
        """The command as an argv list (``/bin/sh -c ...`` when ``shell``)."""
        import shlex

        if isinstance(self.command, list):
            return list(self.command)
        if self.shell:
            return ["/bin/sh", "-c", self.command]
        return shlex.split(self.command)


SourceConfig = Annotated[
    SimulatedSourceConfig
    | StdinSourceConfig
    | SystemSourceConfig
    | FileSourceConfig
    | CommandSourceConfig,
    Field(discriminator="type"),
]


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
