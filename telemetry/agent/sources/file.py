"""The ``file`` source: a sysfs-style file (or every file a glob matches) read on an interval.

Two formats:

- ``number``: the file holds one number, e.g. ``/sys/class/thermal/thermal_zone0/temp``
  (``48312``, millidegrees: ``scale = 0.001``).
- ``w1_slave``: a 1-Wire thermometer (DS18B20) as the Linux ``w1_therm`` driver shows it::

      72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
      72 01 4b 46 7f ff 0e 10 57 t=23125

  The value is ``t`` in °C (23.125). A ``NO`` at the end of the first line is a failed CRC
  check: a failed read, not a reading.

``auto`` picks ``w1_slave`` when the content has ``crc=`` and ``t=``, else ``number``. Then
``value = number * scale + offset``. A glob is expanded at every sample, so sensors that come
and go are followed; each matched file is its own sensor (``{parent}`` tells them apart).
"""

from __future__ import annotations

import glob
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Literal

from telemetry.agent.sources.polled import PolledSource, Sample, SampleError, make_reading
from telemetry.config import FileSourceConfig

#: Most bytes read from one file; sysfs files are tiny.
MAX_FILE_BYTES = 65536

_W1_TEMP = re.compile(r"\bt=(-?\d+)\b")


def parse_number(text: str) -> float:
    """The one finite number ``text`` holds (surrounding whitespace allowed)."""
    stripped = text.strip()
    if not stripped:
        raise SampleError("empty, no number")
    try:
        value = float(stripped)
    except ValueError:
        raise SampleError(f"not a number: {stripped[:40]!r}") from None
    if not math.isfinite(value):
        raise SampleError(f"not a finite number: {stripped[:40]!r}")
    return value


def parse_w1_slave(text: str) -> float:
    """The temperature in °C of a ``w1_slave`` file; :class:`SampleError` on a failed CRC."""
    lines = text.strip().splitlines()
    if len(lines) < 2:
        raise SampleError("w1_slave: expected two lines (CRC line, then t=...)")
    crc = lines[0].split()
    if not crc or crc[-1] != "YES":
        raise SampleError("w1_slave: CRC check failed (NO), read discarded")
    match = _W1_TEMP.search(lines[1])
    if match is None:
        raise SampleError("w1_slave: no t=<millidegrees> on the second line")
    return int(match.group(1)) / 1000.0


def detect_format(text: str) -> Literal["number", "w1_slave"]:
    """``w1_slave`` when ``text`` looks like one, else ``number``."""
    return "w1_slave" if "crc=" in text and "t=" in text else "number"


def parse_file_content(text: str, fmt: Literal["auto", "number", "w1_slave"]) -> float:
    """The number a file holds, in the given (or detected) format, before scale and offset."""
    if fmt == "auto":
        fmt = detect_format(text)
    return parse_w1_slave(text) if fmt == "w1_slave" else parse_number(text)


@dataclass(frozen=True)
class FileRead:
    """One file's outcome: its value, or why there is none."""

    path: str
    value: float | None = None
    error: str | None = None


class FileSource(PolledSource):
    """Reads ``config.path`` (a file or a glob) every ``interval`` seconds."""

    def __init__(self, config: FileSourceConfig, agent_id: str, *, name: str = "file") -> None:
        super().__init__(config, agent_id, name=name)
        self.config = config

    def paths(self) -> list[str]:
        """The files to read now: the path itself, or the glob's matches (sorted)."""
        if glob.has_magic(self.config.path):
            return sorted(glob.glob(self.config.path))
        return [self.config.path]

    def read_all(self) -> list[FileRead]:
        """Read and parse every file (blocking)."""
        paths = self.paths()
        if not paths:
            raise SampleError(f"no file matches {self.config.path}")
        return [self.read_one(path) for path in paths]

    def read_one(self, path: str) -> FileRead:
        """One file's value after scale and offset, or the reason it has none."""
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES)
        except OSError as exc:
            return FileRead(path, error=f"{path}: cannot read: {exc.strerror or exc}")
        try:
            number = parse_file_content(data.decode("utf-8", "replace"), self.config.format)
        except SampleError as exc:
            return FileRead(path, error=f"{path}: {exc}")
        return FileRead(path, value=number * self.config.scale + self.config.offset)

    async def sample(self) -> Sample:
        ts = time.time()
        sample = Sample()
        for read in await self.in_thread(self.read_all):
            if read.value is None:
                sample.errors.append(read.error or f"{read.path}: no value")
                continue
            sensor = self.sensor_name(
                self.config.sensor,
                name=os.path.basename(read.path),
                parent=os.path.basename(os.path.dirname(read.path)),
                path=read.path,
            )
            try:
                sample.readings.append(
                    make_reading(
                        sensor,
                        read.value,
                        ts,
                        metric=self.config.metric,
                        unit=self.config.unit,
                        tags=self.tags,
                    )
                )
            except SampleError as exc:
                sample.errors.append(str(exc))
        return sample
