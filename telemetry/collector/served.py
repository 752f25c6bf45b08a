"""What the HTTP side port reads of the process it serves, so that it needs no import of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from telemetry.collector.live import LiveView
from telemetry.collector.metrics import Metrics
from telemetry.collector.pipeline import Pipeline
from telemetry.config import CollectorConfig


class Served(Protocol):
    """What the side port reads of the process it serves (a collector)."""

    config: CollectorConfig
    metrics: Metrics
    live: LiveView
    pipeline: Pipeline

    @property
    def state(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def connections(self) -> Mapping[int, object]: ...
