"""The agent's Prometheus metrics, read at scrape time from the running agent.

Conventions as the collector's (``telemetry.collector.metrics``): counters for what only
grows (``*_total``), no ``_created`` series, a ``telemetry_build_info`` gauge, the process's
own metrics (``process_*``, ``python_*``). Labels stay low-cardinality: drop reasons are the
spool's codes, sources are named ``<type>-<index>`` by the config.

Every value is read when scraped, from the :class:`~telemetry.agent.AgentLedger`, the spool,
the sender and the :class:`~telemetry.agent.reload.SourceSet`: nothing is counted twice and a
scrape costs a few attribute reads (plus one spooled batch read when the oldest one changed).
The ledger's counters cover a disk spool file's life, across restarts (``docs/delivery.md``).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import metadata

from prometheus_client import (
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from telemetry import DISTRIBUTION
from telemetry.agent.agent import Agent
from telemetry.agent.reload import SourceSet

# No ``*_created`` series beside every counter (a process-wide switch of the library).
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def version() -> str:
    """This installation's version, or ``unknown`` when run from a source tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def reading_time(item: bytes) -> float | None:
    """The epoch seconds of an encoded reading's ``ts``, None when it has none."""
    try:
        ts = json.loads(item).get("ts")
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            return float(ts)
        if isinstance(ts, str):
            return datetime.fromisoformat(ts).timestamp()
    except (ValueError, AttributeError):
        return None
    return None


class AgentCollector(PromCollector):
    """The agent's metric families, computed from the live objects at each scrape."""

    def __init__(
        self, agent: Agent, sources: SourceSet, *, http_refused: Callable[[], int]
    ) -> None:
        self._agent = agent
        self._sources = sources
        self._http_refused = http_refused
        #: (oldest seq, its first reading's time): the oldest batch is read once, not per scrape.
        self._oldest: tuple[int, float] | None = None

    def collect(self) -> Iterable[Metric]:
        agent = self._agent
        ledger = agent.ledger
        for name, value, text in (
            ("produced", ledger.produced, "Readings given to the agent by its sources."),
            ("spooled", ledger.spooled, "Readings closed into the spool."),
            ("sent", ledger.sent, "Readings sent at least once (this run)."),
            ("acked", ledger.acked, "Readings the collector acked as accepted."),
            ("rejected", ledger.rejected, "Readings the collector acked as rejected."),
        ):
            yield CounterMetricFamily(f"telemetry_agent_readings_{name}", text, value=value)
        dropped = CounterMetricFamily(
            "telemetry_agent_readings_dropped",
            "Readings dropped without an ack, by reason (spool_full, too_large...).",
            labels=["reason"],
        )
        for reason, count in sorted(ledger.dropped_by_reason.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            "telemetry_agent_readings_pending",
            "Readings not yet acked: in the spool or the open batch.",
            value=ledger.pending,
        )
        yield CounterMetricFamily(
            "telemetry_agent_batches_sent",
            "Batch sends, resends included (this run).",
            value=ledger.batches_sent,
        )
        yield CounterMetricFamily(
            "telemetry_agent_batches_resent",
            "Batches sent again after a lost connection or a nack (this run).",
            value=ledger.batches_resent,
        )
        yield from self._spool()
        yield from self._connection()
        yield from self._source_families()
        yield CounterMetricFamily(
            "telemetry_agent_http_refused",
            "HTTP connections closed at once: max_connections were being served.",
            value=self._http_refused(),
        )

    def _spool(self) -> Iterable[Metric]:
        spool = self._agent.spool
        yield GaugeMetricFamily(
            "telemetry_agent_spool_batches", "Batches in the spool.", value=spool.batches
        )
        yield GaugeMetricFamily(
            "telemetry_agent_spool_readings", "Readings in the spool.", value=spool.readings
        )
        yield GaugeMetricFamily(
            "telemetry_agent_spool_bytes", "Bytes of encoded batches held.", value=spool.bytes
        )
        yield GaugeMetricFamily(
            "telemetry_agent_spool_durable",
            "1 for a disk spool (kept across restarts), 0 for memory.",
            value=int(spool.durable),
        )
        age = self._oldest_age()
        yield GaugeMetricFamily(
            "telemetry_agent_spool_oldest_age_seconds",
            "Age of the oldest pending reading by its ts, else since first scraped (0: empty).",
            value=age if age is not None else 0.0,
        )

    def _oldest_age(self) -> float | None:
        """Seconds since the oldest pending reading was taken (its ``ts``); for a reading
        without one, since a scrape first saw its batch as the oldest (a lower bound)."""
        seq = self._agent.spool.oldest_seq
        if seq is None:
            self._oldest = None
            return None
        if self._oldest is None or self._oldest[0] != seq:
            batch = self._agent.spool.get(seq)
            taken = reading_time(batch.items[0]) if batch is not None and batch.items else None
            self._oldest = (seq, taken if taken is not None else time.time())
        return max(0.0, time.time() - self._oldest[1])

    def _connection(self) -> Iterable[Metric]:
        agent = self._agent
        endpoint = agent.connected_to
        yield GaugeMetricFamily(
            "telemetry_agent_connected",
            "1 while connected to a collector (after its welcome).",
            value=int(endpoint is not None),
        )
        info = GaugeMetricFamily(
            "telemetry_agent_endpoint",
            "1 for the endpoint the agent is connected to (absent when not connected).",
            labels=["endpoint"],
        )
        if endpoint is not None:
            info.add_metric([endpoint], 1)
        yield info
        connections = agent.sender_stats.connections
        yield CounterMetricFamily(
            "telemetry_agent_connections",
            "Connections a collector welcomed (this run).",
            value=connections,
        )
        yield CounterMetricFamily(
            "telemetry_agent_reconnects",
            "Connections welcomed after the first (this run).",
            value=max(0, connections - 1),
        )
        yield GaugeMetricFamily(
            "telemetry_agent_up",
            "1 while the agent runs and its sender task is alive.",
            value=int(agent.running),
        )

    def _source_families(self) -> Iterable[Metric]:
        readings = CounterMetricFamily(
            "telemetry_agent_source_readings", "Readings each source produced.", labels=["source"]
        )
        errors = CounterMetricFamily(
            "telemetry_agent_source_errors",
            "Failed samples (system, file, command) or bad lines (stdin), by source.",
            labels=["source"],
        )
        crashes = CounterMetricFamily(
            "telemetry_agent_source_crashes",
            "Sources that ended on an unexpected exception (source_failed).",
            labels=["source"],
        )
        for name, counters in sorted(self._sources.counters().items()):
            readings.add_metric([name], counters.readings)
            errors.add_metric([name], counters.errors)
            crashes.add_metric([name], counters.crashed)
        yield readings
        yield errors
        yield crashes
        running = GaugeMetricFamily(
            "telemetry_agent_source_running", "1 for each running source.", labels=["source"]
        )
        for name in self._sources.running_names:
            running.add_metric([name], 1)
        yield running


class AgentMetrics:
    """The registry ``/metrics`` renders: the agent's families, build info, process metrics."""

    def __init__(
        self, agent: Agent, sources: SourceSet, *, http_refused: Callable[[], int]
    ) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=r)
        r.register(PLATFORM_COLLECTOR)
        Gauge(
            "telemetry_build_info",
            "Always 1; the labels say which build runs.",
            ["version", "python"],
            registry=r,
        ).labels(version(), platform.python_version()).set(1)
        r.register(AgentCollector(agent, sources, http_refused=http_refused))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of a sample (tests)."""
        return self.registry.get_sample_value(name, labels)
