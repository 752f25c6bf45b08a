"""The ``null`` sink: accepts everything, keeps nothing (benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Sequence

from telemetry.config import NullSinkConfig
from telemetry.sinks.base import Record


class NullSink:
    """Counts what it is given and discards it."""

    def __init__(self, config: NullSinkConfig) -> None:
        self.name = config.name or config.type
        self.written = 0

    async def start(self) -> None:
        return None

    async def write(self, batch: Sequence[Record]) -> None:
        self.written += len(batch)

    async def close(self) -> None:
        return None
