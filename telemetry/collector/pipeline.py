"""The pipeline: one bounded queue, batcher and retry loop per sink, written once for all sinks.

How this works: a connection calls :meth:`Pipeline.submit` with a batch's records. Each sink's
:class:`SinkRunner` queues them; ``submit`` waits while any queue is full, which stops that
connection from reading (backpressure: the agent sees acks slow down and its window fill).
``submit`` returns a future that completes when every sink has written the records, and only
then does the connection send ``ack``. A runner's worker takes queued items up to
``batch_size`` readings, waits up to ``flush_interval`` for a batch to fill, and calls
``sink.write()``. Transient failures are retried with exponential backoff and full jitter until
``retry_deadline``; then (or at once, for a permanent failure) the items' futures fail with
:class:`DeliveryFailed` and the connection answers ``nack``. Nothing is dropped here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from telemetry.collector.metrics import Metrics
from telemetry.config import SinkBase
from telemetry.log import get_logger
from telemetry.sinks.base import PermanentSinkError, Record, Sink

log = get_logger("telemetry.pipeline")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0


class DeliveryFailed(Exception):
    """A sink could not take a batch; the agent should resend it later."""

    def __init__(self, sink: str, reason: str, *, permanent: bool) -> None:
        super().__init__(f"sink {sink}: {reason}")
        self.sink = sink
        self.reason = reason
        self.permanent = permanent


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full jitter: uniform between 0 and ``min(cap, base * 2**attempt)`` seconds."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


@dataclass(slots=True)
class _Item:
    records: Sequence[Record]
    done: asyncio.Future[None] | None  # None: fire-and-forget, nobody waits


class SinkRunner:
    """A bounded queue, a batcher and a retry loop around one sink."""

    def __init__(self, sink: Sink, config: SinkBase, metrics: Metrics | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.name = sink.name
        self.queue_size = config.queue_size
        self.batch_size = config.batch_size
        self.flush_interval = config.flush_interval
        self.retry_deadline = config.retry_deadline
        self.write_timeout = config.write_timeout
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

    async def start(self) -> None:
        await self.sink.start()
        self._worker = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    def full(self) -> bool:
        return self.queued >= self.queue_size

    async def put(self, records: Sequence[Record], done: asyncio.Future[None] | None) -> None:
        """Queue ``records``, waiting while the queue is full (an oversized batch goes alone)."""
        while self.queued and self.queued + len(records) > self.queue_size:
            self._has_room.clear()
            await self._has_room.wait()
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

    async def _run(self) -> None:
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
            if not self.full():
                self._has_room.set()
            await self._deliver(items, count)

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
        records: list[Record] = [record for item in items for record in item.records]
        error = await self._write_with_retry(records)
        if error is None:
            self.written += count
            if self.metrics is not None:
                self.metrics.sink_written.labels(self.name).inc(count)
        unacked = 0
        for item in items:
            if item.done is None:
                unacked += len(item.records)
            elif not item.done.done():
                if error is None:
                    item.done.set_result(None)
                else:
                    item.done.set_exception(error)
        if error is not None and unacked:
            # Fire-and-forget readings have no ack, so nobody can resend them.
            self.dropped += unacked
            if self.metrics is not None:
                self.metrics.drops.labels("sink_failed_fire_and_forget").inc(unacked)
            log.error(
                "readings_dropped",
                sink=self.name,
                readings=unacked,
                reason="sink_failed_fire_and_forget",
            )

    async def _write_with_retry(self, records: list[Record]) -> DeliveryFailed | None:
        deadline = time.monotonic() + self.retry_deadline
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self.sink.write(records)
            except PermanentSinkError as exc:
                self._count_failure("permanent")
                log.error(
                    "sink_write_failed",
                    sink=self.name,
                    readings=len(records),
                    error=str(exc),
                    permanent=True,
                )
                return DeliveryFailed(self.name, str(exc), permanent=True)
            except Exception as exc:  # any other failure is transient: retry
                reason = str(exc) or type(exc).__name__
                self._count_failure("transient")
                self.healthy = False
                delay = backoff_delay(attempt)
                attempt += 1
                if time.monotonic() + delay > deadline:
                    log.error(
                        "sink_write_failed",
                        sink=self.name,
                        readings=len(records),
                        error=reason,
                        attempts=attempt,
                        permanent=False,
                    )
                    return DeliveryFailed(self.name, reason, permanent=False)
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

    async def close(self, timeout: float) -> None:
        """Write what is queued (up to ``timeout`` seconds), then close the sink."""
        self._closing = True
        self._has_items.set()
        if self._worker is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._worker)
            except TimeoutError:
                log.error("sink_flush_timeout", sink=self.name, queued=self.queued)
                self._worker.cancel()
        await self.sink.close()


class Pipeline:
    """Fans each batch out to every sink's runner; one future per batch for the ack."""

    def __init__(self, runners: list[SinkRunner]) -> None:
        self.runners = runners

    @property
    def healthy(self) -> bool:
        return all(runner.healthy for runner in self.runners)

    async def start(self) -> None:
        started: list[SinkRunner] = []
        try:
            for runner in self.runners:
                await runner.start()
                started.append(runner)
        except BaseException:
            for runner in started:
                await runner.close(timeout=1.0)
            raise

    async def submit(self, records: Sequence[Record]) -> asyncio.Future[list[None]]:
        """Queue ``records`` on every sink; the result completes when all have written them.

        Waits while a sink's queue is full (backpressure). The returned future fails with
        :class:`DeliveryFailed` when a sink gave up on the records.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for runner in self.runners:
            future: asyncio.Future[None] = loop.create_future()
            await runner.put(records, future)
            futures.append(future)
        return asyncio.gather(*futures)

    async def submit_nowait_ack(self, records: Sequence[Record]) -> None:
        """Queue fire-and-forget records: nobody waits for them, failures are logged."""
        for runner in self.runners:
            await runner.put(records, None)

    async def close(self, timeout: float) -> None:
        """Flush every sink (together, up to ``timeout`` seconds) and close them."""
        await asyncio.gather(*(runner.close(timeout) for runner in self.runners))
