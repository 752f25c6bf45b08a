"""A collector whose only sink records, at each ``write()``, how old every reading is.

Used by ``latency.py``: the collector's own ``Collector`` class and pipeline (sink queue,
``flush_interval``, batching) with a sink that, for each record, stores
``time.time() - record.ts``; ``ts`` is set by the agent just before ``agent.send()``. On
SIGTERM it drains as ``telemetry collect`` does and writes the latencies to ``--out``: per
reading, seconds from ``ts`` to the write and from ``ts`` to the collector's ``received_at``.

    .venv/bin/python benchmarks/latency_collector.py --port 7600 --out latencies.txt
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from pathlib import Path

from telemetry.collector import Collector
from telemetry.config import CollectorConfig
from telemetry.log import configure_logging
from telemetry.runtime import run_async
from telemetry.sinks.base import Record

_ts = attrgetter("ts")
_received_at = attrgetter("received_at")


class LatencySink:
    """Keeps ``write time - ts`` and ``received_at - ts`` of every record; writes them out
    on ``close()``, one ``total received`` pair (seconds) per line.

    ``write()`` only keeps the write time and the records' two datetimes (two C-level
    ``map``s); the arithmetic waits for ``close()``: done per record in ``write()`` it cost
    the collector a third on top of its own work, so the probe was measured as much as the
    collector (figures: docs/benchmarks.md, "Figures behind code choices").
    """

    def __init__(self, out: Path) -> None:
        self.name = "latency"
        self.out = out
        self.writes: list[tuple[float, list[datetime], list[datetime]]] = []

    async def start(self) -> None:
        pass

    async def write(self, batch: Sequence[Record]) -> None:
        self.writes.append((time.time(), list(map(_ts, batch)), list(map(_received_at, batch))))

    async def close(self) -> None:
        if not self.writes:
            return
        lines = []
        for now, stamps, received in self.writes:
            for ts, at in zip(stamps, received, strict=True):
                sent = ts.timestamp()
                lines.append(f"{now - sent:.6f} {at.timestamp() - sent:.6f}\n")
        self.out.write_text("".join(lines))
        self.writes = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--flush-interval", type=float, default=0.005, help="the sink's")
    args = parser.parse_args()
    config = CollectorConfig(
        ingest={"port": args.port},
        http={"enabled": False},
        log={"level": "warning", "format": "json"},
        sinks=[{"type": "null", "name": "latency", "flush_interval": args.flush_interval}],
    )
    configure_logging("warning", "json")

    def tune_gc() -> None:  # as ``telemetry collect`` does
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    sink = LatencySink(args.out)
    run_async(lambda: Collector(config, sinks=[sink]).run(on_started=tune_gc))


if __name__ == "__main__":
    main()
