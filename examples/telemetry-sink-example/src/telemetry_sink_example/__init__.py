"""An example third-party telemetry sink: one CSV line per reading appended to a file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from pydantic import Field

from telemetry.config import PluginSinkConfig
from telemetry.protocol import format_timestamp
from telemetry.sinks.base import Record, TransientSinkError

COLUMNS = ["id", "agent", "sensor", "metric", "value", "unit", "ts", "tags", "received_at"]


class CsvSinkConfig(PluginSinkConfig):
    """``[[sinks]] type = "csv"``: where the file is and how it is written."""

    type: Literal["csv"]
    path: Path = Path("data/readings.csv")
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class CsvSink:
    """Appends readings to a CSV file (with a header line when the file is new)."""

    config_model = CsvSinkConfig

    def __init__(self, config: CsvSinkConfig) -> None:
        self.name = config.name or config.type
        self.path = config.path
        self.delimiter = config.delimiter
        self._file: TextIO | None = None

    async def start(self) -> None:
        if self._file is not None:
            return
        self._file = await asyncio.to_thread(self._open)

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if new:  # a header line first
            csv.writer(file, delimiter=self.delimiter).writerow(COLUMNS)
            file.flush()
        return file

    async def write(self, batch: Sequence[Record]) -> None:
        file = self._file
        if file is None:
            raise TransientSinkError("csv sink is not started")
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.delimiter)
        for r in batch:
            writer.writerow(
                [
                    r.id or "",
                    r.agent,
                    r.sensor,
                    r.metric or "",
                    repr(r.value),
                    r.unit or "",
                    format_timestamp(r.ts),
                    json.dumps(r.tags, ensure_ascii=False, sort_keys=True),
                    format_timestamp(r.received_at),
                ]
            )
        data = buffer.getvalue()

        def append() -> None:
            file.write(data)
            file.flush()

        try:
            await asyncio.to_thread(append)
        except OSError as exc:
            raise TransientSinkError(f"cannot append to {self.path}: {exc.strerror}") from exc

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
