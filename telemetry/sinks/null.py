"""The ``null`` sink: accepts everything, keeps nothing (benchmarks, tests)."""

from __future__ import annotations

from typing import ClassVar

from telemetry.config import NullSinkConfig
from telemetry.sinks._common import sink_name
from telemetry.sinks.base import Batch


class NullSink:
    """Counts what it is given (readings or dead letters) and discards it."""

    config_model: ClassVar[type[NullSinkConfig]] = NullSinkConfig

    def __init__(self, config: NullSinkConfig) -> None:
        self.name = sink_name(config)
        self.written = 0

    async def start(self) -> None:
        pass

    async def write(self, batch: Batch) -> None:
        self.written += len(batch)

    async def close(self) -> None:
        pass
