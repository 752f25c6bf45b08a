"""The relay's books: where every delivered message went (its ledger), and its metrics.

The ledger balances: ``delivered == acked + dead_lettered + nacked + in_flight``. A message
the server delivers again (after a nak, an expired ``ack_wait`` or a lost relay) is counted
once more in ``delivered`` and in ``redelivered``: the counts are of deliveries, not readings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from telemetry.collector.metrics import Metrics
from telemetry.collector.runner import SinkRunner


@dataclass(slots=True)
class RelayLedger:
    """Deliveries by where they ended up."""

    delivered: int = 0  #: messages fetched, redeliveries included
    redelivered: int = 0  #: of which the server had delivered before
    acked: int = 0  #: every sink of the route committed the reading
    dead_lettered: int = 0  #: refused for good (or undecodable): dead-lettered, then acked
    nacked: int = 0  #: a sink failed for now: delivered again after ``redelivery_delay``
    in_flight: int = 0  #: in the pipeline now

    @property
    def balanced(self) -> bool:
        return self.delivered == self.acked + self.dead_lettered + self.nacked + self.in_flight

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RelayMetrics:
    """The collector's metric families (sinks, drops, process) plus the relay's own."""

    def __init__(self) -> None:
        self.base = Metrics()
        registry = self.base.registry
        self.messages = Counter(
            "telemetry_relay_messages",
            "Messages delivered to the relay, by outcome (acked, dead_lettered, nacked).",
            ["outcome"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "telemetry_relay_redeliveries",
            "Messages the server delivered more than once (after a nak, an expired ack_wait "
            "or a lost relay).",
            registry=registry,
        )
        self.fetches = Counter(
            "telemetry_relay_fetches", "Fetch requests, by outcome.", ["outcome"], registry=registry
        )
        self.ack_failures = Counter(
            "telemetry_relay_ack_failures",
            "Acks or naks that could not be sent (the message is delivered again after ack_wait).",
            registry=registry,
        )


def scrape_families(
    runners: list[SinkRunner],
    ledger: RelayLedger,
    pending: int | None,
    ack_pending: int | None,
    ready: bool,
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The families read at scrape time: consumer lag, in-flight, sink queues, readiness."""
    lag = GaugeMetricFamily(
        "telemetry_relay_consumer_pending",
        "Messages of the stream the durable consumer has not delivered yet (its lag), as last "
        "read; absent until read once.",
    )
    if pending is not None:
        lag.add_metric([], pending)
    yield lag
    unacked = GaugeMetricFamily(
        "telemetry_relay_consumer_ack_pending",
        "Messages delivered to this durable's relays and not acked yet, as last read.",
    )
    if ack_pending is not None:
        unacked.add_metric([], ack_pending)
    yield unacked
    in_flight = GaugeMetricFamily(
        "telemetry_relay_in_flight_messages", "Messages in this relay's pipeline now."
    )
    in_flight.add_metric([], ledger.in_flight)
    yield in_flight
    queued = GaugeMetricFamily(
        "telemetry_sink_queue_readings", "Readings waiting in each sink's queue.", labels=["sink"]
    )
    healthy = GaugeMetricFamily(
        "telemetry_sink_healthy", "1 while the sink's last write succeeded.", labels=["sink"]
    )
    for runner in runners:
        queued.add_metric([runner.name], runner.queued)
        healthy.add_metric([runner.name], 1 if runner.healthy else 0)
    yield queued
    yield healthy
    gauge = GaugeMetricFamily("telemetry_ready", "1 while consuming with healthy sinks.")
    gauge.add_metric([], 1 if ready else 0)
    yield gauge
