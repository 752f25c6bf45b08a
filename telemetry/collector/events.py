"""What a connection's session reports, counted in the metrics and shown in the live view."""

from __future__ import annotations

from collections.abc import Sequence

from telemetry.collector.agents import AgentSessions
from telemetry.collector.live import LiveView
from telemetry.collector.metrics import Metrics
from telemetry.sinks.base import Record


class ConnectionEvents:
    """The :class:`~telemetry.collector.session.SessionEvents` of one connection."""

    __slots__ = ("agents", "conn_id", "live", "metrics")

    def __init__(
        self, metrics: Metrics, live: LiveView, conn_id: int, agents: AgentSessions | None = None
    ) -> None:
        self.metrics = metrics
        self.live = live
        self.conn_id = conn_id
        self.agents = agents

    def bytes_received(self, count: int) -> None:
        self.metrics.bytes.inc(count)
        self.live.received(self.conn_id, count)

    def frames(self, count: int) -> None:
        self.metrics.frames.inc(count)

    def accepted(self, records: Sequence[Record]) -> None:
        self.metrics.readings.labels("accepted").inc(len(records))
        if records:
            self.live.accepted(self.conn_id, records)

    def rejected(
        self, who: str, errors: Sequence[str], kinds: Sequence[str], sensor: str | None = None
    ) -> None:
        self.metrics.readings.labels("rejected").inc()
        for kind in kinds:
            self.metrics.rejections.labels(kind).inc()
        self.live.rejected(self.conn_id, who, errors, sensor)

    def batch(self) -> None:
        self.metrics.batches.inc()

    def ack(self) -> None:
        self.metrics.acks.inc()

    def nack(self, reason: str) -> None:
        self.metrics.nacks.labels(reason).inc()

    def sink_refused(self) -> None:
        self.metrics.rejections.labels("sink_refused").inc()

    def connection_error(self, code: str) -> None:
        self.metrics.connection_errors.labels(code).inc()

    def agent_connected(self, agent: str, peer: str) -> None:
        self.metrics.agents_connected.inc()
        self.live.agent_connected(self.conn_id, agent, peer)
        if self.agents is not None:
            self.agents.claim(agent, self.conn_id, peer)

    def closed(self, agent: str | None) -> None:
        # A fire-and-forget peer is shown live too while it is connected: forget it as well.
        self.live.agent_disconnected(self.conn_id)
        if agent is not None:
            self.metrics.agents_connected.dec()
            if self.agents is not None:
                self.agents.release(agent, self.conn_id)
