"""The relay's config, ``config/relay.toml``: ``[relay]`` (the JetStream consumer), ``[http]``,
``[log]`` and ``[[sinks]]`` (the collector's sink tables and routes, :mod:`.sinks`).

The relay reads what the collectors' ``nats`` sink stored in a JetStream stream and feeds it to
its own sinks (docs/relay.md). Every limit has a default: the readings one relay holds at once
are at most ``fetch_batch * max_in_flight``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from telemetry.config.base import LogConfig, Strict
from telemetry.config.loading import TomlThenEnv
from telemetry.config.sinks import SinkConfig, check_sinks

#: The relay's side port: beside a collector's 7601 on the same host.
DEFAULT_RELAY_HTTP_PORT = 7602


class RelaySection(Strict):
    """``[relay]``: where to read, as which durable consumer, and how much at once."""

    #: Name in logs (default: the durable's name).
    id: str | None = None
    #: Every node of the NATS cluster; the client moves to another one when its node is lost.
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    #: The stream the collectors' nats sink writes.
    stream: str = Field(default="TELEMETRY", pattern=r"^[^\s.*>/\\]{1,255}$")
    #: The durable pull consumer's name: relays sharing it share the work; a relay per store
    #: (each its own durable) lets each store fall behind on its own.
    durable: str = Field(default="telemetry-relay", pattern=r"^[^\s.*>/\\]{1,255}$")
    #: Subjects the consumer takes (empty: the whole stream). Set when the consumer is
    #: created; an existing durable keeps its own filter.
    subjects: list[str] = Field(default_factory=list)
    #: Most messages asked for in one fetch.
    fetch_batch: int = Field(default=1000, ge=1, le=100_000)
    #: Seconds one fetch waits for messages before asking again.
    fetch_timeout: float = Field(default=1.0, gt=0)
    #: Fetched batches in the pipeline at once; the relay fetches no more until one is done.
    max_in_flight: int = Field(default=8, ge=1)
    #: Seconds the server waits for an ack before it delivers a message again (consumer
    #: setting). The relay sends "in progress" for batches still in its pipeline, so this only
    #: matters when a relay dies.
    ack_wait: float = Field(default=30.0, gt=0)
    #: Unacked messages the server lets out to all relays of this durable at once (consumer
    #: setting; at least ``fetch_batch * max_in_flight`` times the number of relays).
    max_ack_pending: int = Field(default=20_000, ge=1)
    #: Seconds before a message whose sink failed for now is delivered again (``nak`` delay).
    redelivery_delay: float = Field(default=2.0, ge=0)
    #: Deliveries of one message before the relay dead-letters it (0: no limit).
    max_deliveries: int = Field(default=0, ge=0)
    #: Seconds between two reads of the consumer's lag (``num_pending``).
    lag_interval: float = Field(default=5.0, gt=0)
    #: Seconds between two ``relay_ledger`` log events.
    ledger_interval: float = Field(default=60.0, gt=0)
    #: Seconds a SIGTERM/SIGINT drain may take.
    shutdown_timeout: float = Field(default=30.0, gt=0)
    #: Most bytes of an undecodable message kept in its dead letter.
    dead_letter_max_bytes: int = Field(default=4096, ge=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Credentials, when the server wants them.
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, subjects: list[str]) -> list[str]:
        if any(not s or any(c.isspace() for c in s) for s in subjects):
            raise ValueError("a subject must not be empty or hold spaces")
        return subjects

    @property
    def name(self) -> str:
        """The relay's name in logs."""
        return self.id or self.durable


class RelayHttpConfig(Strict):
    """``[http]``: the relay's side port (``/healthz``, ``/readyz``, ``/metrics``) and its
    limits, as the collector's."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_RELAY_HTTP_PORT, ge=0, le=65535)
    #: Open HTTP connections at once; further ones are closed at once (and counted).
    max_connections: int = Field(default=64, ge=1)
    #: Seconds a client has to send a complete request head; 0: no limit.
    header_timeout: float = Field(default=10.0, ge=0)
    #: Seconds an idle keep-alive connection stays open between two requests.
    keepalive_timeout: float = Field(default=15.0, gt=0)
    #: When not empty, ``/metrics`` with ``metrics_auth`` needs ``Authorization: Bearer <one
    #: of these>``; the probes never do.
    tokens: list[str] = Field(default_factory=list)
    #: With ``tokens``: ``/metrics`` needs a token.
    metrics_auth: bool = False


class RelayConfig(TomlThenEnv):
    """The whole relay config: ``config/relay.toml``."""

    relay: RelaySection = Field(default_factory=RelaySection)
    http: RelayHttpConfig = Field(default_factory=RelayHttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sinks: list[SinkConfig] = Field(min_length=1)

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        return check_sinks(sinks)

    @model_validator(mode="after")
    def _room_for_in_flight(self) -> RelayConfig:
        relay = self.relay
        held = relay.fetch_batch * relay.max_in_flight
        if relay.max_ack_pending < relay.fetch_batch:
            raise ValueError(
                f"relay.max_ack_pending {relay.max_ack_pending} is below relay.fetch_batch "
                f"{relay.fetch_batch}: a fetch could never be filled (held at once: {held})"
            )
        return self
