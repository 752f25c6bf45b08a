"""The collector's config, ``config/collector.toml``: ``[collector]``, ``[ingest]``,
``[http]``, ``[log]`` and ``[[sinks]]`` (the sink models are in :mod:`.sinks`)."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, field_validator

from telemetry.config.base import DEFAULT_HTTP_PORT, DEFAULT_INGEST_PORT, LogConfig, Strict
from telemetry.config.loading import TomlThenEnv
from telemetry.config.sinks import SinkConfig, SqliteSinkConfig, check_sinks
from telemetry.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_CLOCK_SKEW
from telemetry.protocol.framing import DEFAULT_MAX_FRAME_BYTES


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
    """``[http]``: the side port (``/healthz``, ``/readyz``, ``/metrics``, the live view and
    ``/api/tail``) and its limits."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535)
    #: Open HTTP connections at once; further ones are closed at once (and counted).
    max_connections: int = Field(default=256, ge=1)
    #: Seconds a client has to send a complete request head (slowloris); 0: no limit.
    header_timeout: float = Field(default=10.0, ge=0)
    #: Seconds an idle keep-alive connection stays open between two requests.
    keepalive_timeout: float = Field(default=15.0, gt=0)
    #: ``/api/tail`` streams open at once; further ones get 503.
    max_tail_subscribers: int = Field(default=16, ge=1)
    #: Largest queue (readings) of one tail subscriber; ``?buffer=N`` is clamped to it.
    tail_max_buffer: int = Field(default=10_000, ge=1)
    #: Seconds one write to a tail stream may block (the client reads nothing) before that
    #: stream is ended and its slot freed.
    tail_write_timeout: float = Field(default=30.0, gt=0)
    #: When not empty, everything but ``/healthz`` and ``/readyz`` (and ``/metrics`` unless
    #: ``metrics_auth``) needs ``Authorization: Bearer <one of these>`` (or the page's cookie).
    tokens: list[str] = Field(default_factory=list)
    #: With ``tokens``: ``/metrics`` needs a token too.
    metrics_auth: bool = False

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, tokens: list[str]) -> list[str]:
        for token in tokens:
            if not token or token != token.strip():
                raise ValueError("an [http] token must not be empty or start or end with spaces")
            if not token.isascii() or not token.isprintable():
                raise ValueError("an [http] token must be printable ASCII")
        return tokens


def _default_sinks() -> list[SinkConfig]:
    return [SqliteSinkConfig(type="sqlite")]


class CollectorConfig(TomlThenEnv):
    """The whole collector config: ``config/collector.toml``."""

    collector: CollectorSection = Field(default_factory=CollectorSection)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks, min_length=1)

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        return check_sinks(sinks)
