"""The sink contract (DESIGN.md section 3), written once.

- ``start()`` returns fast (open a file, a pool); it may raise to refuse to start.
- ``write(batch)`` does only the backend's I/O for a batch of records. It returns once the
  backend holds them (a database: committed) and raises :class:`TransientSinkError`
  (worth retrying) or :class:`PermanentSinkError` (never worth retrying). Any other exception
  counts as transient.
- ``close()`` flushes, is idempotent and is safe without ``start()``.

Batching, retries with backoff and jitter, timeouts and queueing are the pipeline's job
(``telemetry.collector.pipeline``), the same for every sink.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from telemetry.protocol.messages import format_timestamp


class SinkError(Exception):
    """A sink failed to write a batch."""


class TransientSinkError(SinkError):
    """The write may succeed later (connection lost, timeout, backend busy)."""


class PermanentSinkError(SinkError):
    """The write will never succeed for this batch (bad data for the backend, no permission)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A validated reading as the collector hands it to sinks."""

    id: str | None  # "<agent>:<seq>:<index>" for batch readings, None for fire-and-forget
    agent: str
    sensor: str
    value: float
    ts: datetime
    received_at: datetime
    metric: str | None = None
    unit: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with RFC 3339 timestamps."""
        return {
            "id": self.id,
            "agent": self.agent,
            "sensor": self.sensor,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "ts": format_timestamp(self.ts),
            "tags": self.tags,
            "received_at": format_timestamp(self.received_at),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@runtime_checkable
class Sink(Protocol):
    """What every sink implements; see the module docstring for the contract."""

    name: str

    async def start(self) -> None: ...

    async def write(self, batch: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...
