"""The ``telemetry tail`` subscribers of the live view: a filter, and a bounded queue each.

Each subscriber has a bounded queue: a record that matches its filter is appended, or dropped
and counted for that subscriber when the queue is full. A slow subscriber never slows the
collector; it only loses readings, and is told how many (docs/live-view.md).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Iterable, Sequence
from fnmatch import translate

from telemetry.sinks.base import Record

#: Default and largest queue of one tail subscriber (readings).
TAIL_QUEUE = 10_000
MAX_TAIL_QUEUE = 100_000


def glob(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of the shell-style ``patterns`` (None: no pattern given)."""
    patterns = list(patterns)
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns))


class TailFilter:
    """Which records a tail subscriber wants: sensor globs, agent globs, tag ``key=glob``.

    Several sensor (or agent) globs match any of them; several tags must all match.
    """

    def __init__(
        self,
        sensors: Iterable[str] = (),
        agents: Iterable[str] = (),
        tags: Iterable[str] = (),
    ) -> None:
        self._sensor = glob(sensors)
        self._agent = glob(agents)
        self._tags: list[tuple[str, re.Pattern[str]]] = []
        for tag in tags:
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise ValueError(f"tag filter {tag!r} is not key=value")
            pattern = glob([value])
            assert pattern is not None
            self._tags.append((key, pattern))

    def matches(self, record: Record) -> bool:
        """True when ``record`` passes every part of the filter."""
        if self._sensor is not None and not self._sensor.match(record.sensor):
            return False
        if self._agent is not None and not self._agent.match(record.agent):
            return False
        for key, pattern in self._tags:
            value = record.tags.get(key)
            if value is None or not pattern.match(value):
                return False
        return True


class Subscription:
    """One tail subscriber: its filter and its bounded queue of matching records."""

    def __init__(self, tail_filter: TailFilter, maxsize: int = TAIL_QUEUE) -> None:
        self.filter = tail_filter
        self.maxsize = maxsize
        self.queue: deque[Record] = deque()
        #: Records that matched but found the queue full.
        self.dropped = 0
        self.closed = False
        self._ready = asyncio.Event()

    def offer(self, records: Sequence[Record]) -> None:
        """Queue the matching ``records`` (hot path: never blocks, drops when full)."""
        queue = self.queue
        matches = self.filter.matches
        added = False
        for record in records:
            if matches(record):
                if len(queue) < self.maxsize:
                    queue.append(record)
                    added = True
                else:
                    self.dropped += 1
        if added:
            self._ready.set()

    async def get(self) -> list[Record]:
        """Wait for records (or :meth:`close`); return and remove everything queued."""
        while not self.queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        records = list(self.queue)
        self.queue.clear()
        return records

    def close(self) -> None:
        """Wake the reader for the last time: :meth:`get` returns what is left, then ``[]``."""
        self.closed = True
        self._ready.set()
