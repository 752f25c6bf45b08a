"""``[[sinks]]``: the keys every sink takes, the built-in sinks' models, and plugin configs.

Each sink type declares its config model, built-in or plugin alike: the sink class's
``config_model`` attribute. The model says whether that type can be a dead-letter sink
(:attr:`SinkBase.accepts_dead_letters`). Built-in types are validated through the
discriminated union below, without importing any sink module; any other ``type`` is looked
up in the ``telemetry.sinks`` entry-point group, and only then is that plugin imported.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from telemetry.config.base import Strict, check_template

#: The entry-point group third-party sinks register in: name -> ``"module:SinkClass"``.
ENTRY_POINT_GROUP = "telemetry.sinks"


class SinkBase(Strict):
    """Keys every ``[[sinks]]`` entry takes, besides its own."""

    #: This type of sink stores JSON documents and so can take dead letters (``dead_letter =
    #: true``): its ``write()`` is then given :class:`~telemetry.sinks.base.DeadLetter` s.
    accepts_dead_letters: ClassVar[bool] = False

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

    accepts_dead_letters: ClassVar[bool] = True

    type: Literal["null"]
    #: No wait for a fuller batch: a write costs nothing, and records held for it only cost
    #: the collector (in benchmarks, ~10% more CPU per reading with the 5 ms of other sinks).
    flush_interval: float = Field(default=0.0, ge=0)


class StdoutSinkConfig(SinkBase):
    """One JSON line per reading on standard output."""

    accepts_dead_letters: ClassVar[bool] = True

    type: Literal["stdout"]


class JsonlSinkConfig(SinkBase):
    """One JSON line per reading appended to a file."""

    accepts_dead_letters: ClassVar[bool] = True

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
    #: Retention (docs/sinks.md): delete rows stored more than this many seconds ago, by
    #: ``received_at`` (0: keep them).
    max_age: float = Field(default=0, ge=0)
    #: Retention: keep at most this many rows, the most recently stored (0: no limit).
    max_rows: int = Field(default=0, ge=0)
    #: Seconds between two retention passes (with ``max_age`` or ``max_rows``).
    prune_interval: float = Field(default=60.0, gt=0)
    #: Most rows one DELETE removes: a write waits for at most one such chunk.
    prune_chunk: int = Field(default=2_000, ge=1)


#: Fields a sink's subject/topic template may use; values are escaped (docs/sinks.md).
TEMPLATE_FIELDS = ("agent", "sensor", "metric", "unit")


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
    #: TimescaleDB only (a hypertable): drop chunks whose readings (by ``ts``) are older than
    #: this many seconds, through ``add_retention_policy`` (0: no policy; an existing one is
    #: left alone).
    retention: float = Field(default=0, ge=0)
    #: TimescaleDB only: compress chunks older than this many seconds, segmented by sensor,
    #: through ``add_compression_policy`` (0: no policy).
    compress_after: float = Field(default=0, ge=0)

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
    #: Seconds JetStream remembers a ``Nats-Msg-Id`` to drop a duplicate (stream setting, when
    #: the sink creates it). A reading id is stored once as long as every resend of it comes
    #: within this window: make it longer than agents may spool and resend (docs/relay.md).
    duplicate_window: float = Field(default=120.0, gt=0)
    #: Copies of each message the stream keeps on as many nodes of a cluster (stream setting,
    #: when the sink creates it; at most the cluster's size; 3 survives one node lost).
    replicas: int = Field(default=1, ge=1, le=5)
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
    """Redis streams through redis.asyncio: one ``XADD`` per reading, one script call per
    batch."""

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
    this (and narrowing ``type`` to ``Literal["its-name"]``), as the built-in sinks do with
    theirs. A plugin without one takes only the keys every sink takes. A model that sets
    ``accepts_dead_letters = True`` lets the sink be a dead-letter sink.
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
#: The config model of each built-in sink type (``telemetry.sinks.registry`` names the class).
BUILTIN_SINK_MODELS: dict[str, type[SinkBase]] = {
    tag: member
    for member in get_args(get_args(BuiltinSinkConfig)[0])
    for tag in get_args(member.model_fields["type"].annotation)
}
#: The sink types this module knows; any other ``type`` is looked up as a plugin.
BUILTIN_SINK_TYPES: frozenset[str] = frozenset(BUILTIN_SINK_MODELS)


class UnknownSink(LookupError):
    """No built-in sink and no installed plugin has that name."""


def plugin_entry_point(name: str) -> EntryPoint:
    """The entry point of the plugin sink named ``name``; :class:`UnknownSink` when none."""
    found = entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        if ep.name == name:
            return ep
    known = sorted(BUILTIN_SINK_TYPES | {ep.name for ep in found})
    raise UnknownSink(f"no sink named {name!r}; known sinks: {', '.join(known)}")


def _literal(message: str) -> str:
    # PydanticCustomError formats {names} in its message: keep braces literal.
    return message.replace("{", "{{").replace("}", "}}")


def _plugin_config_model(sink_type: str) -> type[PluginSinkConfig]:
    """The config model of the plugin sink named ``sink_type`` (imports the plugin)."""
    try:
        cls = plugin_entry_point(sink_type).load()
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
    # resolved (imported) only now, so the config package stays cheap to import.
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


def check_sinks(sinks: list[SinkConfig]) -> list[SinkConfig]:
    """Distinct names, dead letters only to types that take them, and some sink for readings."""
    seen: set[str] = set()
    for sink in sinks:
        name = sink.name or sink.type
        if name in seen:
            raise ValueError(f"two sinks are named {name!r}: give each a distinct name")
        seen.add(name)
        if sink.dead_letter and not sink.accepts_dead_letters:
            takers = sorted(t for t, m in BUILTIN_SINK_MODELS.items() if m.accepts_dead_letters)
            raise ValueError(
                f"sink {name!r}: type {sink.type!r} cannot take dead letters; use one of "
                f"{', '.join(takers)}"
            )
    if all(sink.dead_letter for sink in sinks):
        raise ValueError("every sink is a dead-letter sink: readings would go nowhere")
    return sinks
