"""The agent's config, ``config/agent.toml``: ``[agent]``, ``[spool]``, ``[log]`` and
``[[sources]]`` (the source models are in :mod:`.sources`)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator

from telemetry.config.base import DEFAULT_INGEST_PORT, LogConfig, Strict
from telemetry.config.loading import TomlThenEnv
from telemetry.config.sources import SourceConfig
from telemetry.config.tls import ClientTlsConfig


class AgentHttpConfig(Strict):
    """``[agent.http]``: the agent's ``/metrics`` (Prometheus text) and ``/healthz``.

    Needs ``prometheus-client`` (the ``collector`` extra). Plain HTTP/1.1, one request per
    connection, bounded: ``max_connections`` at once, each within ``request_timeout``.
    """

    #: Address to listen on; the default serves this host only.
    host: str = "127.0.0.1"
    #: Port (0: any free port, logged in ``agent_http_listening``).
    port: int = Field(default=7602, ge=0, lt=65536)
    #: Connections served at once; more are closed at once (and counted).
    max_connections: int = Field(default=16, ge=1, le=1024)
    #: Seconds a client has to send its request and read the answer.
    request_timeout: float = Field(default=5.0, gt=0)


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
    #: Reconnect backoff: full jitter between 0 and min(max, min * 2**attempt) seconds. The
    #: cap bounds how long an agent takes to notice a collector is back (at most
    #: ``reconnect_max``, a third of it on average): 3 s suits a LAN; full jitter spreads a
    #: fleet's reconnects over those seconds (``telemetry.backoff``).
    reconnect_min: float = Field(default=0.1, gt=0)
    reconnect_max: float = Field(default=3.0, gt=0)
    #: Seconds a clean stop (stdin EOF, SIGTERM) waits for outstanding acks.
    shutdown_timeout: float = Field(default=30.0, gt=0)
    #: Seconds between two ``ledger`` log events (reading counters); 0: only at exit.
    ledger_interval: float = Field(default=60.0, ge=0)
    #: Seconds one frame may take to be written (the collector, or the path, stopped reading)
    #: before the connection is closed and re-established. The ack timeout holds too.
    write_timeout: float = Field(default=30.0, gt=0)
    #: Least seconds before a nacked batch is resent, whatever ``retry_after_ms`` says (at
    #: most ``reconnect_max``).
    nack_retry_min: float = Field(default=0.05, gt=0)
    #: Seconds a connection must last for the reconnect backoff to reset when no batch was
    #: acked on it: a collector that welcomes then closes does not get a hot reconnect loop.
    backoff_reset_after: float = Field(default=10.0, ge=0)
    #: TLS to the collectors (docs/security.md); unset: plaintext.
    tls: ClientTlsConfig | None = None
    #: ``/metrics`` and ``/healthz`` over HTTP (docs/agent-hosts.md); unset: none.
    http: AgentHttpConfig | None = None

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


class AgentConfig(TomlThenEnv):
    """The whole agent config: ``config/agent.toml``."""

    agent: AgentSection = Field(default_factory=AgentSection)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
