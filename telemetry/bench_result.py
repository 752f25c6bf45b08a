"""What ``telemetry bench`` measured: throughput, ack latency percentiles, CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchResult:
    """What one bench run did; ``latency_ms`` holds ack latency percentiles (batched mode)."""

    connections: int
    batch: int
    readings: int  # sent, markers excluded
    accepted: int  # as acked by the collector (fire-and-forget: not acked, 0)
    rejected: int
    nacks: int
    marker_readings: int
    bytes_sent: int
    elapsed: float
    cpu_seconds: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: Fire-and-forget: seconds from the last frame written to the marker's ack (worst conn).
    drain_seconds: float | None = None

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes_sent / self.elapsed / 2**20 if self.elapsed > 0 else 0.0

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu_seconds / self.readings * 1e6 if self.readings else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every figure, derived ones included, for ``--json``."""
        return {
            **asdict(self),
            "readings_per_s": round(self.readings_per_s, 1),
            "mib_per_s": round(self.mib_per_s, 3),
            "cpu_us_per_reading": round(self.cpu_us_per_reading, 3),
            "cpu_percent": round(100 * self.cpu_seconds / self.elapsed, 1) if self.elapsed else 0,
        }

    def format(self) -> str:
        """A few human-readable lines."""
        mode = f"batches of {self.batch}, acked" if self.batch else "fire-and-forget, 1/frame"
        lines = [
            f"{self.connections} connection(s), {mode}",
            f"sent {self.readings:,} readings in {self.elapsed:.3f} s: "
            f"{self.readings_per_s:,.0f} readings/s, {self.mib_per_s:.1f} MiB/s",
        ]
        if self.batch:
            lines.append(
                f"acked: {self.accepted:,} accepted, {self.rejected:,} rejected, "
                f"{self.nacks} nack(s)"
            )
            if self.latency_ms:
                lat = self.latency_ms
                lines.append(
                    f"ack latency: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, "
                    f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms "
                    f"({int(lat['count']):,} batches)"
                )
        else:
            drain = self.drain_seconds or 0.0
            lines.append(
                f"handled: marker batch acked on every connection {drain * 1e3:.1f} ms after "
                f"the last frame ({self.marker_readings} marker reading(s) also reach the sinks)"
            )
        percent = 100 * self.cpu_seconds / self.elapsed if self.elapsed else 0.0
        lines.append(
            f"bench CPU: {self.cpu_seconds:.3f} s ({self.cpu_us_per_reading:.2f} µs/reading, "
            f"{percent:.0f}% of one core)"
        )
        return "\n".join(lines)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max (nearest rank) of ``samples``, plus their count."""
    if not samples:
        return {}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p * n) - 1))]

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1],
        "count": float(n),
    }


# --- payloads --------------------------------------------------------------------------------
