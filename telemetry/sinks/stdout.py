"""The ``stdout`` sink: one JSON line per reading on standard output (logs go to stderr)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from telemetry.config import StdoutSinkConfig
from telemetry.sinks.base import Record, TransientSinkError


class StdoutSink:
    """Writes each batch as JSON lines and flushes once per batch."""

    def __init__(self, config: StdoutSinkConfig, stream: TextIO | None = None) -> None:
        self.name = config.name or config.type
        self._stream = stream

    async def start(self) -> None:
        return None

    async def write(self, batch: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(record.to_json() + "\n" for record in batch))
            stream.flush()
        except OSError as exc:
            raise TransientSinkError(f"cannot write to stdout: {exc}") from exc

    async def close(self) -> None:
        stream = self._stream or sys.stdout
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
