"""The collector's metrics read at scrape time (not counted as they happen)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from telemetry.collector.ledger import Ledger
from telemetry.collector.runner import SinkRunner


def scrape_families(
    runners: Sequence[SinkRunner], ledger: Ledger, ready_now: bool
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The families read at scrape time: sink queues and health, the ledger, readiness."""
    queued = GaugeMetricFamily(
        "telemetry_sink_queue_readings",
        "Readings waiting in each sink's queue.",
        labels=["sink"],
    )
    healthy = GaugeMetricFamily(
        "telemetry_sink_healthy", "1 while the sink's last write succeeded.", labels=["sink"]
    )
    pruned = CounterMetricFamily(
        "telemetry_sink_pruned_readings",
        "Rows a sink's retention deleted, by limit (sqlite: max_age, max_rows).",
        labels=["sink", "limit"],
    )
    for runner in runners:
        queued.add_metric([runner.name], runner.queued)
        healthy.add_metric([runner.name], 1 if runner.healthy else 0)
        retention = getattr(runner.sink, "retention", None)
        if retention is not None and retention.enabled:
            for limit, rows in retention.pruned.items():
                pruned.add_metric([runner.name, limit], rows)
    if pruned.samples:
        yield pruned
    counts = ledger.as_dict()
    pending = GaugeMetricFamily(
        "telemetry_ledger_pending_readings",
        "Readings of batches validated and not yet acked, nacked or given up.",
    )
    pending.add_metric([], counts.pop("pending"))
    where = CounterMetricFamily(
        "telemetry_ledger_readings",
        "Readings by where they ended up (docs/delivery.md): received, acked, rejected, "
        "unacked, fire_and_forget_received, fire_and_forget_rejected.",
        labels=["state"],
    )
    for state, count in counts.items():
        where.add_metric([state], count)
    yield where
    yield pending
    ready = GaugeMetricFamily("telemetry_ready", "1 while serving with healthy sinks.")
    ready.add_metric([], 1 if ready_now else 0)
    yield queued
    yield healthy
    yield ready
