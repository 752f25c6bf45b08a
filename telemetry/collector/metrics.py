"""The collector's Prometheus metrics, one registry per collector (tests run several).

Labels stay low-cardinality: rejection reasons are stable codes (``missing_field``,
``unknown_key``, ``wrong_type``... see ``telemetry.protocol.readings.REASON_CODES``), never
field names or values from the wire. Prometheus conventions: counters for what only grows, no
``_created`` series, a ``telemetry_build_info`` gauge, and the process's own metrics
(``process_*``, ``python_*``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from importlib import metadata

from prometheus_client import (
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

# No ``*_created`` series beside every counter (a process-wide switch of the library).
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Live(PromCollector):
    """Gauges read at scrape time from the running collector."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


class Metrics:
    """Every counter, gauge and histogram the collector exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        r.register(PLATFORM_COLLECTOR)
        Gauge(
            "telemetry_build_info",
            "Always 1; the labels say which build runs.",
            ["version", "python"],
            registry=r,
        ).labels(version(), platform.python_version()).set(1)
        self.connections = Counter(
            "telemetry_connections",
            "Agent connections by outcome (accepted, refused).",
            ["outcome"],
            registry=r,
        )
        self.connection_errors = Counter(
            "telemetry_connection_errors",
            "Connections ended by a protocol error, by code.",
            ["code"],
            registry=r,
        )
        self.frames = Counter(
            "telemetry_frames", "Frames received, heartbeats included.", registry=r
        )
        self.bytes = Counter("telemetry_received_bytes", "Bytes received from agents.", registry=r)
        self.readings = Counter(
            "telemetry_readings",
            "Readings received, by outcome (accepted, rejected).",
            ["outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "telemetry_rejections",
            "Reasons readings were rejected, by error type.",
            ["reason"],
            registry=r,
        )
        self.batches = Counter("telemetry_batches", "Batches received.", registry=r)
        self.acks = Counter("telemetry_acks", "Acks sent.", registry=r)
        self.nacks = Counter("telemetry_nacks", "Nacks sent, by reason.", ["reason"], registry=r)
        self.drops = Counter(
            "telemetry_readings_dropped", "Readings dropped, by reason.", ["reason"], registry=r
        )
        self.sink_writes = Histogram(
            "telemetry_sink_write_seconds",
            "Duration of successful sink writes.",
            ["sink"],
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.sink_written = Counter(
            "telemetry_sink_written_readings",
            "Readings written by each sink.",
            ["sink"],
            registry=r,
        )
        self.sink_failures = Counter(
            "telemetry_sink_write_failures",
            "Failed sink writes, by kind (transient, permanent).",
            ["sink", "kind"],
            registry=r,
        )
        self.takeovers = Counter(
            "telemetry_session_takeovers",
            "Hellos for an agent id that another connection held (the older one is replaced).",
            registry=r,
        )
        self.open_connections = Gauge("telemetry_open_connections", "Open connections.", registry=r)
        self.agents_connected = Gauge(
            "telemetry_agents_connected", "Connections that said hello.", registry=r
        )

    def watch(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Export gauges computed at scrape time (sink queue depth, sink health)."""
        self.registry.register(_Live(read))

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, 0 when absent: ``value("telemetry_acks_total")``."""
        found = self.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def version() -> str:
    """This installation's version, or ``unknown`` when run from a source tree."""
    for name in ("sensor-telemetry", "telemetry"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
