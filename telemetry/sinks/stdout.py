"""The ``stdout`` sink: one JSON line per reading (or dead letter) on standard output (logs go
to stderr)."""

from __future__ import annotations

import contextlib
import sys
from typing import ClassVar, TextIO

from telemetry.config import StdoutSinkConfig
from telemetry.sinks._common import json_lines, sink_name
from telemetry.sinks.base import Batch, TransientSinkError


class StdoutSink:
    """Writes each batch as JSON lines and flushes once per batch."""

    config_model: ClassVar[type[StdoutSinkConfig]] = StdoutSinkConfig

    def __init__(self, config: StdoutSinkConfig, stream: TextIO | None = None) -> None:
        self.name = sink_name(config)
        self._stream = stream

    async def start(self) -> None:
        pass

    async def write(self, batch: Batch) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write(json_lines(batch).decode("utf-8"))
            stream.flush()
        except OSError as exc:
            raise TransientSinkError(f"cannot write to stdout: {exc}") from exc

    async def close(self) -> None:
        stream = self._stream or sys.stdout
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
