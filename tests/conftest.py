"""Fixtures shared by every test: uvloop as the event loop, a collector on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from telemetry.collector import Collector
from telemetry.sinks.base import Sink
from tests.support import RecordingSink, WireClient, collector_config


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the collector runs in production."""
    return {"uvloop": uvloop.new_event_loop}


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
    await WireClient.close_all()
    for collector in started:
        await collector.shutdown()


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()
