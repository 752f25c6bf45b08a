"""The collector's config, ``config/collector.toml``: ``[collector]``, ``[ingest]``,
``[http]``, ``[log]`` and ``[[sinks]]`` (the sink models are in :mod:`.sinks`)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from telemetry.config.base import DEFAULT_HTTP_PORT, DEFAULT_INGEST_PORT, LogConfig, Strict
from telemetry.config.loading import TomlThenEnv
from telemetry.config.sinks import SinkConfig, SqliteSinkConfig, check_sinks
from telemetry.config.tls import IngestTlsConfig, ServerTlsConfig
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


class CredentialConfig(Strict):
    """``[[ingest.credentials]]``: a secret and the agent ids it may speak for (one of
    ``token``, ``token_file`` or ``token_sha256``)."""

    #: Agent ids, or globs such as ``"greenhouse-*"``, a ``hello`` with this token may claim.
    agents: list[str] = Field(min_length=1)
    token: SecretStr | None = None
    #: A file holding the token (trailing newline ignored), re-read on reload (SIGHUP).
    token_file: Path | None = None
    #: The token's SHA-256 in hex, so that the config file holds no secret.
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    _digest: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _one_secret(self) -> CredentialConfig:
        given = [self.token is not None, self.token_file is not None, self.token_sha256 is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of token, token_file or token_sha256")
        if self.token is not None:
            self._digest = _digest(self.token.get_secret_value(), "token")
        elif self.token_file is not None:
            try:
                text = self.token_file.read_text("utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read token_file {self.token_file}: {exc}") from None
            self._digest = _digest(text, f"token_file {self.token_file}")
        else:
            assert self.token_sha256 is not None
            self._digest = bytes.fromhex(self.token_sha256)
        if any(not pattern.strip() for pattern in self.agents):
            raise ValueError("agents must not hold an empty id or glob")
        return self

    @property
    def digest(self) -> bytes:
        """The token's SHA-256, the only form the collector keeps."""
        return self._digest


def _digest(token: str, what: str) -> bytes:
    if not token.strip():
        raise ValueError(f"{what} is empty: an empty token would let anyone in")
    return hashlib.sha256(token.encode("utf-8")).digest()


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
    #: When not empty, a ``hello`` must carry one of these tokens; each may speak for any
    #: agent id. ``credentials`` bind tokens to agent ids instead.
    tokens: list[SecretStr] = Field(default_factory=list)
    #: Tokens bound to the agent ids they may speak for (docs/security.md).
    credentials: list[CredentialConfig] = Field(default_factory=list)
    #: With auth on (tokens, credentials or client certificates), still take fire-and-forget
    #: readings without a ``hello``, stored under the sender's host: for trusted LANs only.
    allow_anonymous: bool = False
    #: Seconds a connection has to send its ``hello`` when auth is on and anonymous readings
    #: are not allowed.
    hello_timeout: float = Field(default=10.0, gt=0)
    #: Seconds a started frame may take to arrive whole (a slow sender is cut off).
    frame_timeout: float = Field(default=30.0, gt=0)
    #: Open connections one IP address may hold at once.
    max_connections_per_ip: int = Field(default=1000, ge=1)
    #: Most rejected readings one ``ack`` lists; the rest are counted (``rejected_unlisted``).
    max_ack_rejections: int = Field(default=100, ge=0)
    #: When a sink queue is full: ``backpressure`` stops reading from connections until there
    #: is room; ``nack`` answers batches at once with ``nack`` and ``retry_after_ms``.
    on_full: Literal["backpressure", "nack"] = "backpressure"
    #: The ``retry_after_ms`` of nacks (sink down, queue full, draining).
    retry_after_ms: int = Field(default=1000, ge=0)
    #: Seconds after which a connection gets ``goaway`` so agents rebalance across
    #: collectors (0: never); each connection's age is drawn within +-10% of it.
    max_connection_age: float = Field(default=0, ge=0)
    #: TLS on this port (docs/security.md); unset: plaintext.
    tls: IngestTlsConfig | None = None

    @field_validator("tokens")
    @classmethod
    def _no_empty_token(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        if any(not token.get_secret_value().strip() for token in tokens):
            raise ValueError("a token is empty: an empty token would let anyone in")
        return tokens


class HttpConfig(Strict):
    """``[http]``: the side port (``/healthz``, ``/readyz``, ``/metrics``, the live view and
    ``/api/tail``) and its limits."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535)
    #: HTTPS on this port (docs/security.md); unset: plain HTTP.
    tls: ServerTlsConfig | None = None
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
