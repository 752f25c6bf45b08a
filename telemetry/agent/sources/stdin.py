"""The ``stdin`` source: one JSON reading per line on standard input.

Lines are read without blocking the event loop (:func:`stdin_lines`, split by the sans-I/O
:class:`LineSplitter`). A bad line is logged with its number and reason and counted; EOF ends
the source.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any, BinaryIO

from pydantic import ValidationError

from telemetry.agent.sources.base import ReadingSink
from telemetry.config import StdinSourceConfig
from telemetry.log import get_logger
from telemetry.protocol import Reading, describe_errors, validate_reading

log = get_logger("telemetry.agent.sources")

#: Longest stdin line accepted; a longer one is a bad line.
MAX_LINE_BYTES = 1024 * 1024
_READ_SIZE = 65536


class BadLine(Exception):
    """A stdin line that is not a valid reading; the message says why."""


def parse_line(line: bytes, tags: Mapping[str, str] | None = None) -> Reading | None:
    """One JSON line -> a :class:`Reading` (None for a blank line); :class:`BadLine` if bad.

    ``tags`` are added to the reading's own tags, which win on a conflict.
    """
    text = line.strip()
    if not text:
        return None
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise BadLine("not UTF-8") from None
    except RecursionError:
        raise BadLine("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BadLine(f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    if tags:
        own = obj.get("tags", {})
        if isinstance(own, dict):
            obj = {**obj, "tags": {**tags, **own}}
    try:
        return validate_reading(obj)
    except ValidationError as exc:
        raise BadLine("; ".join(describe_errors(exc))) from None
    except (ValueError, TypeError, RecursionError) as exc:  # whatever the shape, one bad line
        raise BadLine(f"not a reading: {type(exc).__name__}") from None


class LineSplitter:
    """Bytes in, lines out (sans-I/O); a line longer than ``limit`` becomes one :class:`BadLine`.

    The over-long line is never buffered whole: once ``limit`` bytes without a newline are
    held they are discarded, and so is everything up to the next newline.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | BadLine]:
        """Add ``data``; return the lines it completes (newline included)."""
        buffer = self._buffer
        buffer += data
        lines: list[bytes | BadLine] = []
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start : end + 1])
            start = end + 1
            if self._discarding:  # the tail of an over-long line, already reported
                self._discarding = False
            elif len(line) > self.limit:
                lines.append(self._too_long())
            else:
                lines.append(line)
        del buffer[:start]
        if len(buffer) > self.limit and not self._discarding:
            lines.append(self._too_long())
            self._discarding = True
        if self._discarding:
            buffer.clear()
        return lines

    def feed_eof(self) -> list[bytes | BadLine]:
        """The last line when the input does not end with a newline."""
        line, self._buffer = bytes(self._buffer), bytearray()
        return [line] if line and not self._discarding else []

    def _too_long(self) -> BadLine:
        return BadLine(f"line longer than {self.limit} bytes")


async def stdin_lines(
    stream: BinaryIO | None = None, limit: int = MAX_LINE_BYTES
) -> AsyncIterator[bytes | BadLine]:
    """Lines of ``stream`` (default: standard input) without blocking the event loop.

    Pipes, sockets and terminals are read by the event loop; anything else (a regular file,
    ``/dev/null``) is read in a worker thread. A line longer than ``limit`` is yielded as a
    :class:`BadLine`.
    """
    stream = stream if stream is not None else sys.stdin.buffer
    splitter = LineSplitter(limit)
    fd = stream.fileno()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        # A regular file or a device like /dev/null: the loop cannot watch it, and reading
        # it never waits for long, so a worker thread reads it.
        while data := await asyncio.to_thread(stream.read, _READ_SIZE):
            for line in splitter.feed(data):
                yield line
    else:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        # A duplicate descriptor: closing the transport must not close the process's stdin.
        pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            while data := await reader.read(_READ_SIZE):
                for line in splitter.feed(data):
                    yield line
        finally:
            transport.close()
    for line in splitter.feed_eof():
        yield line


class StdinSource:
    """JSON lines on standard input (or ``lines``), one reading each; EOF ends it."""

    finite = True

    def __init__(
        self,
        config: StdinSourceConfig,
        *,
        name: str = "stdin",
        lines: AsyncIterator[bytes | BadLine] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._lines = lines
        #: Lines read, readings produced and bad lines, so far.
        self.lines = 0
        self.produced = 0
        self.bad_lines = 0

    async def run(self, sink: ReadingSink) -> None:
        lines = self._lines if self._lines is not None else stdin_lines()
        async for line in lines:
            self.lines += 1
            try:
                if isinstance(line, BadLine):
                    raise line
                reading = parse_line(line, self.config.tags)
            except Exception as exc:  # any line, of any shape, is at worst one bad line
                reason = str(exc) if isinstance(exc, BadLine) else type(exc).__name__
                self.bad_lines += 1
                log.warning("stdin_bad_line", source=self.name, line=self.lines, reason=reason)
                continue
            if reading is not None:
                await sink.send(reading)
                self.produced += 1
        log.info(
            "stdin_eof",
            source=self.name,
            lines=self.lines,
            readings=self.produced,
            bad_lines=self.bad_lines,
        )
