"""The ``jsonl`` sink: one JSON line per reading (or dead letter) appended to a file, rotated
by size or time.

How this works: every file operation runs on the sink's worker thread, off the event loop.
Before a batch is appended, the file is rotated when the batch would take it past
``rotate_bytes``, or when the wall clock has entered a new ``rotate_interval`` period (periods
count from the Unix epoch in UTC, so 86400 rotates at midnight UTC; an existing file's period
is that of its last modification). Rotation renames ``readings.jsonl`` to
``readings-20261127T071502.123456Z.jsonl`` and opens a new file; with ``compress`` the rotated
file is then gzipped on a second thread (written to ``.gz.tmp``, renamed when complete, the
plain file removed) so writes do not wait for it. With ``keep`` only the newest rotated files
are kept. A rotated file left uncompressed by a crash is compressed at the next start, and
:meth:`JsonlSink.close` waits for compression in progress.

A single batch larger than ``rotate_bytes`` still goes into one file: a batch is never split.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

from telemetry.config import JsonlSinkConfig
from telemetry.log import get_logger
from telemetry.sinks._common import json_lines, sink_name, started
from telemetry.sinks._thread import WorkerThread
from telemetry.sinks.base import Batch, TransientSinkError

log = get_logger("telemetry.sinks.jsonl")

_STAMP = "%Y%m%dT%H%M%S.%fZ"


class JsonlSink:
    """Appends batches to ``path``; file I/O runs on one worker thread, off the event loop."""

    config_model: ClassVar[type[JsonlSinkConfig]] = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig) -> None:
        self.name = sink_name(config)
        self.path = config.path
        self.fsync = config.fsync
        self.rotate_bytes = config.rotate_bytes
        self.rotate_interval = config.rotate_interval
        self.compress = config.compress
        self.keep = config.keep
        self._file: BinaryIO | None = None
        self._size = 0
        self._period = 0
        self._thread = WorkerThread(f"sink-{self.name}")
        self._compressor: ThreadPoolExecutor | None = None
        self._compressing: list[Future[None]] = []
        pattern = (
            re.escape(self.path.stem) + r"-\d{8}T\d{6}\.\d{6}Z(-\d+)?" + re.escape(self.path.suffix)
        )
        self._rotated = re.compile(pattern + r"(\.gz)?")

    async def start(self) -> None:
        """Open (create) the file for appending; compress rotated files a crash left plain."""
        if self._file is not None:
            return
        self._thread.start()
        self._file = await self._thread.run(self._open)
        if self.compress:
            for leftover in self.rotated_files():
                if leftover.suffix != ".gz":
                    self._compress_later(leftover)

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        stat = os.fstat(file.fileno())
        self._size = stat.st_size
        self._period = self._period_of(stat.st_mtime if stat.st_size else time.time())
        return file

    def _period_of(self, timestamp: float) -> int:
        return int(timestamp // self.rotate_interval) if self.rotate_interval else 0

    async def write(self, batch: Batch) -> None:
        """Append the batch (rotating first when due); returns after the flush (and fsync)."""
        started(self._file, "jsonl")
        try:  # encoded on the sink's thread too: the event loop only hands the batch over
            await self._thread.run(lambda: self._append(json_lines(batch)))
        except OSError as exc:
            raise TransientSinkError(f"cannot append to {self.path}: {exc.strerror}") from exc

    def _append(self, data: bytes) -> None:
        file = self._file
        assert file is not None
        if self._size and self._rotation_due(len(data)):
            file = self._rotate(file)
        file.write(data)
        file.flush()
        if self.fsync:
            os.fsync(file.fileno())
        self._size += len(data)

    def _rotation_due(self, incoming: int) -> bool:
        if self.rotate_bytes and self._size + incoming > self.rotate_bytes:
            return True
        return bool(self.rotate_interval) and self._period_of(time.time()) != self._period

    def _rotate(self, file: BinaryIO) -> BinaryIO:
        file.close()
        self._file = None
        target = self._rotated_name()
        os.replace(self.path, target)
        log.info("jsonl_rotated", sink=self.name, file=str(target), bytes=self._size)
        self._file = self._open()
        if self.compress:
            self._compress_later(target)
        else:
            self._prune()
        return self._file

    def _rotated_name(self) -> Path:
        stamp = datetime.now(UTC).strftime(_STAMP)
        base = f"{self.path.stem}-{stamp}"
        target = self.path.with_name(base + self.path.suffix)
        n = 1
        while target.exists() or target.with_name(target.name + ".gz").exists():
            target = self.path.with_name(f"{base}-{n}{self.path.suffix}")
            n += 1
        return target

    def rotated_files(self) -> list[Path]:
        """The rotated files beside ``path``, oldest first (their names sort by time)."""
        if not self.path.parent.is_dir():
            return []
        found = [p for p in self.path.parent.iterdir() if self._rotated.fullmatch(p.name)]
        return sorted(found, key=lambda p: p.name)

    def _compress_later(self, path: Path) -> None:
        if self._compressor is None:
            self._compressor = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{self.name}-gz")
        self._compressing = [f for f in self._compressing if not f.done()]
        self._compressing.append(self._compressor.submit(self._gzip, path))

    def _gzip(self, path: Path) -> None:
        target = path.with_name(path.name + ".gz")
        partial = path.with_name(path.name + ".gz.tmp")
        try:
            with open(path, "rb") as src, gzip.open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, target)
            path.unlink()
        except OSError as exc:
            log.error("jsonl_compress_failed", sink=self.name, file=str(path), error=str(exc))
            return
        self._prune()

    def _prune(self) -> None:
        if not self.keep:
            return
        rotated = self.rotated_files()
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("jsonl_prune_failed", sink=self.name, file=str(old), error=str(exc))

    async def close(self) -> None:
        """Flush and close the file, wait for compression in progress; idempotent."""
        file, self._file = self._file, None
        if file is not None:
            await self._thread.run(file.close)
        self._thread.stop()
        compressor, self._compressor = self._compressor, None
        if compressor is not None:
            await asyncio.get_running_loop().run_in_executor(None, compressor.shutdown, True)
        self._compressing = []
