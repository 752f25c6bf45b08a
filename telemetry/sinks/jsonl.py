"""The ``jsonl`` sink: one JSON line per reading appended to a file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

from telemetry.config import JsonlSinkConfig
from telemetry.sinks._thread import WorkerThread
from telemetry.sinks.base import Record, TransientSinkError


class JsonlSink:
    """Appends batches to ``path``; file I/O runs on one worker thread, off the event loop."""

    def __init__(self, config: JsonlSinkConfig) -> None:
        self.name = config.name or config.type
        self.path = config.path
        self.fsync = config.fsync
        self._file: BinaryIO | None = None
        self._thread = WorkerThread(f"sink-{self.name}")

    async def start(self) -> None:
        self._thread.start()
        self._file = await self._thread.run(self._open)

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.path, "ab")

    async def write(self, batch: Sequence[Record]) -> None:
        file = self._file
        if file is None:
            raise TransientSinkError("jsonl sink is not started")
        data = "".join(record.to_json() + "\n" for record in batch).encode("utf-8")

        def append() -> None:
            file.write(data)
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())

        try:
            await self._thread.run(append)
        except OSError as exc:
            raise TransientSinkError(f"cannot append to {self.path}: {exc.strerror}") from exc

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await self._thread.run(file.close)
        self._thread.stop()
