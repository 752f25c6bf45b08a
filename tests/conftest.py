"""Fixtures shared by every test: uvloop as the event loop, a collector on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from telemetry.collector import Collector
from telemetry.config import CollectorConfig
from telemetry.sinks.base import Sink
from tests.support import RecordingSink


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the collector runs in production."""
    return {"uvloop": uvloop.new_event_loop}


def collector_config(tmp_path: Path, **sections: Any) -> CollectorConfig:
    """A collector config on free ports; ``sections`` override whole sections."""
    data: dict[str, Any] = {
        "ingest": {"host": "127.0.0.1", "port": 0},
        "http": {"host": "127.0.0.1", "port": 0},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "telemetry.db")}],
        "log": {"level": "debug", "format": "json"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return CollectorConfig(**data)


StartCollector = Callable[..., Any]


@pytest.fixture
async def start_collector(tmp_path: Path) -> AsyncIterator[StartCollector]:
    """Start collectors in this loop; each is drained when the test ends."""
    started: list[Collector] = []

    async def start(
        sinks: list[Sink] | None = None, sink_options: dict[str, Any] | None = None, **sections: Any
    ) -> Collector:
        if sinks is not None:  # in-memory sinks: the config entries only carry pipeline options
            options = sink_options or {}
            sections["sinks"] = [{"type": "null", "name": s.name, **options} for s in sinks]
        collector = Collector(collector_config(tmp_path, **sections), sinks=sinks)
        await collector.start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        await collector.shutdown()


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()
