"""One sink's runner: its route, bounded queue, batcher and retry loop (the pipeline runs one
per sink; :mod:`telemetry.collector.pipeline`).

A runner's worker takes queued items up to ``batch_size`` readings, waits up to
``flush_interval`` for a batch to fill, and calls ``sink.write()``. The two kinds of failure
are decided once, here: transient (retried with backoff and full jitter until
``retry_deadline``, then :class:`DeliveryFailed`) and permanent (bisected to the refused
records, or reported as the sink named them with :class:`RefusedRecords`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from telemetry.backoff import backoff_delay
from telemetry.collector.metrics import Metrics
from telemetry.config import SinkBase
from telemetry.log import get_logger
from telemetry.sinks.base import (
    DeadLetterSink,
    PermanentSinkError,
    Record,
    RefusedRecords,
    Sink,
    TransientSinkError,
)

log = get_logger("telemetry.pipeline")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
#: Seconds a sink that is not reachable yet at start-up is retried at least.
START_DEADLINE = 30.0

#: A record a sink refused for good, and why: ``"sink <name>: <the sink's reason>"``.
Refusal = tuple[Record, str]


class DeliveryFailed(Exception):
    """A sink could not take a batch before its retry deadline; resend it later."""

    def __init__(self, sink: str, reason: str) -> None:
        super().__init__(f"sink {sink}: {reason}")
        self.sink = sink
        self.reason = reason


@dataclass(slots=True)
class _Item:
    records: Sequence[Any]  # Records; DeadLetters for a dead-letter runner
    done: asyncio.Future[list[Refusal]] | None  # None: fire-and-forget, nobody waits


class SinkRunner:
    """A route, a bounded queue, a batcher and a retry loop around one sink.

    A dead-letter runner (``config.dead_letter``) queues :class:`DeadLetter` s and needs a
    :class:`DeadLetterSink`: config validation lets only sink types whose model
    ``accepts_dead_letters`` be one.
    """

    def __init__(
        self, sink: Sink | DeadLetterSink, config: SinkBase, metrics: Metrics | None = None
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.metrics = metrics
        self.queue_size = config.queue_size
        self.batch_size = config.batch_size
        self.flush_interval = config.flush_interval
        self.retry_deadline = config.retry_deadline
        self.write_timeout = config.write_timeout
        self.dead_letter = config.dead_letter
        self.required = config.required
        self._sensor_globs = [re.compile(fnmatch.translate(glob)) for glob in config.sensors]
        self._tags = dict(config.tags)
        self.routes_all = not self._sensor_globs and not self._tags
        #: Called with fire-and-forget records the sink refused for good (nobody else hears).
        self.on_refused: Callable[[SinkRunner, list[Refusal]], None] | None = None
        self.queued = 0  # readings waiting in the queue
        self.written = 0
        self.dropped = 0
        self.healthy = True
        self._items: deque[_Item] = deque()
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        #: Set once :meth:`close` has flushed and closed the sink.
        self.closed = asyncio.Event()

    async def start(self, *, after: asyncio.Event | None = None) -> None:
        """Start the sink, retrying a :class:`TransientSinkError` (a backend not answering
        yet) with backoff for up to ``retry_deadline`` or :data:`START_DEADLINE` seconds,
        whichever is longer; then start the worker. Anything else is raised at once.

        ``after``: the worker writes nothing before this event is set (a reload's replacement
        waits for its predecessor's ``closed``, so two writers never share a file); records
        queue meanwhile, up to ``queue_size``."""
        deadline = time.monotonic() + max(self.retry_deadline, START_DEADLINE)
        attempt = 0
        while True:
            try:
                await self.sink.start()
                break
            except TransientSinkError as exc:
                delay = backoff_delay(attempt, 0.5, BACKOFF_CAP)
                if time.monotonic() + delay > deadline:
                    raise
                attempt += 1
                log.warning(
                    "sink_start_failed", sink=self.name, error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
        self._worker = asyncio.create_task(self._run(after), name=f"sink-{self.name}")

    # --- routing and queueing ---------------------------------------------------------------

    def route(self, records: Sequence[Record]) -> Sequence[Record]:
        """The records this sink takes."""
        if self.routes_all:
            return records
        return [record for record in records if self._accepts(record)]

    def _accepts(self, record: Record) -> bool:
        if self._sensor_globs and not any(g.match(record.sensor) for g in self._sensor_globs):
            return False
        tags = record.tags
        return all(tags.get(key) == value for key, value in self._tags.items())

    def would_wait(self, count: int) -> bool:
        """True when queueing ``count`` more readings has to wait for room."""
        return self.queued > 0 and self.queued + count > self.queue_size

    async def put(self, records: Sequence[Any], done: asyncio.Future[list[Refusal]] | None) -> None:
        """Queue ``records``, waiting while the queue is full (an oversized batch goes alone)."""
        while self.would_wait(len(records)):
            self._has_room.clear()
            await self._has_room.wait()
        self.put_nowait(records, done)

    def put_nowait(
        self, records: Sequence[Any], done: asyncio.Future[list[Refusal]] | None
    ) -> None:
        """Queue ``records`` now, whatever the queue holds."""
        if self._closing:
            raise RuntimeError(f"sink {self.name} is closing")
        self._items.append(_Item(records, done))
        self.queued += len(records)
        self._has_items.set()

    def _take(self) -> list[_Item]:
        taken: list[_Item] = []
        count = 0
        while self._items and (not taken or count + len(self._items[0].records) <= self.batch_size):
            item = self._items.popleft()
            taken.append(item)
            count += len(item.records)
        return taken

    # --- the worker -------------------------------------------------------------------------

    async def _run(self, after: asyncio.Event | None) -> None:
        if after is not None:
            await after.wait()
        while True:
            if not self._items:
                if self._closing:
                    return
                self._has_items.clear()
                await self._has_items.wait()
                continue
            if self.flush_interval and self.queued < self.batch_size and not self._closing:
                await self._fill(time.monotonic() + self.flush_interval)
            items = self._take()
            count = sum(len(item.records) for item in items)
            self.queued -= count
            if not self.would_wait(0):
                self._has_room.set()
            try:
                await self._deliver(items, count)
            except asyncio.CancelledError:  # close() gave up: nobody may wait for these forever
                self._fail(items, "closed before the write finished")
                raise

    async def _fill(self, deadline: float) -> None:
        """Wait until the queue holds a full batch or the deadline passes."""
        while self.queued < self.batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._has_items.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._has_items.wait()
            except TimeoutError:
                return

    async def _deliver(self, items: list[_Item], count: int) -> None:
        records: Sequence[Any] = (
            items[0].records
            if len(items) == 1  # the common case under load: one batch, no copy
            else [record for item in items for record in item.records]
        )
        outcome = await self._write_all(records, 0)
        if isinstance(outcome, DeliveryFailed):
            unacked = 0
            for item in items:
                if item.done is None:
                    unacked += len(item.records)
                elif not item.done.done():
                    item.done.set_exception(outcome)
            if unacked:  # fire-and-forget readings have no ack, so nobody can resend them
                self._drop(unacked, "sink_failed_fire_and_forget")
            return
        refused = dict(outcome)
        self.written += count - len(refused)
        if self.metrics is not None:
            self.metrics.sink_written.labels(self.name).inc(count - len(refused))
        position = 0
        for item in items:
            size = len(item.records)
            refusals = (
                [
                    (record, refused[position + i])
                    for i, record in enumerate(item.records)
                    if position + i in refused
                ]
                if refused
                else []
            )
            position += size
            if item.done is None:
                if refusals and self.on_refused is not None:
                    self.on_refused(self, refusals)
            elif not item.done.done():
                item.done.set_result(refusals)

    async def _write_all(
        self, records: Sequence[Any], offset: int
    ) -> DeliveryFailed | list[tuple[int, str]]:
        """Write ``records``; on a permanent error, bisect to the records the sink refuses.

        A sink that says which records it refused (:class:`RefusedRecords`, raised after it
        wrote all the others) is taken at its word: no retry, no bisection."""
        outcome = await self._write_with_retry(records)
        if outcome is None:
            return []
        if isinstance(outcome, DeliveryFailed):
            return outcome
        if isinstance(outcome, RefusedRecords):
            return [
                (offset + index, f"sink {self.name}: {reason}")
                for index, reason in sorted(outcome.refused.items())
                if 0 <= index < len(records)
            ]
        if len(records) == 1:
            return [(offset, f"sink {self.name}: {outcome}")]
        middle = len(records) // 2
        refused: list[tuple[int, str]] = []
        for part, start in ((records[:middle], offset), (records[middle:], offset + middle)):
            result = await self._write_all(part, start)
            if isinstance(result, DeliveryFailed):
                return result
            refused += result
        return refused

    async def _write_with_retry(
        self, records: Sequence[Any]
    ) -> DeliveryFailed | PermanentSinkError | None:
        deadline = time.monotonic() + self.retry_deadline
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self.sink.write(records)
            except PermanentSinkError as exc:
                self._count_failure("permanent")
                if isinstance(exc, RefusedRecords):  # the backend took every record but those
                    if not self.healthy:
                        log.info("sink_recovered", sink=self.name, attempts=attempt + 1)
                    self.healthy = True
                log.error(
                    "sink_write_refused", sink=self.name, readings=len(records), error=str(exc)
                )
                return exc
            except Exception as exc:  # any other failure is transient: retry
                reason = str(exc) or type(exc).__name__
                self._count_failure("transient")
                self.healthy = False
                delay = backoff_delay(attempt, BACKOFF_BASE, BACKOFF_CAP)
                attempt += 1
                if time.monotonic() + delay > deadline:
                    log.error(
                        "sink_write_failed",
                        sink=self.name,
                        readings=len(records),
                        error=reason,
                        attempts=attempt,
                    )
                    return DeliveryFailed(self.name, reason)
                log.warning(
                    "sink_write_retry",
                    sink=self.name,
                    readings=len(records),
                    error=reason,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)
            else:
                if not self.healthy:
                    log.info("sink_recovered", sink=self.name, attempts=attempt + 1)
                self.healthy = True
                if self.metrics is not None:
                    self.metrics.sink_writes.labels(self.name).observe(time.monotonic() - started)
                log.debug(
                    "sink_write",
                    sink=self.name,
                    readings=len(records),
                    seconds=round(time.monotonic() - started, 6),
                )
                return None

    def _count_failure(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.sink_failures.labels(self.name, kind).inc()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self.metrics is not None:
            self.metrics.drops.labels(reason).inc(count)
        log.error("readings_dropped", sink=self.name, readings=count, reason=reason)

    @property
    def closing(self) -> bool:
        return self._closing

    def _fail(self, items: Sequence[_Item], reason: str) -> None:
        """Fail the futures of ``items`` (their batches are nacked: the agents resend)."""
        failed = DeliveryFailed(self.name, reason)
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_exception(failed)

    async def close(self, timeout: float) -> None:
        """Write what is queued (up to ``timeout`` seconds), then close the sink. Whatever
        could not be written by then is failed (:class:`DeliveryFailed`), never left waiting."""
        self._closing = True
        self._has_items.set()
        try:
            if self._worker is not None:
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(self._worker)
                except TimeoutError:
                    log.error("sink_flush_timeout", sink=self.name, queued=self.queued)
                    self._worker.cancel()
                    await asyncio.wait([self._worker])
            self._fail(self._items, "closed before the write")
            self._items.clear()
            self.queued = 0
            await self.sink.close()
        finally:
            self.closed.set()
