"""The pipeline: routing, and one bounded queue, batcher and retry loop per sink, written once.

How this works: a connection calls :meth:`Pipeline.submit` with a batch's records. Each
reading sink's :class:`SinkRunner` takes the records its route matches (sensor globs, tags)
into its queue; ``submit`` waits while a queue is full, which stops that connection from
reading (backpressure: the agent sees acks slow down and its window fill). ``submit`` returns
a future that completes when every routed sink has written its records; only then does the
connection send ``ack``.

A runner's worker takes queued items up to ``batch_size`` readings, waits up to
``flush_interval`` for a batch to fill, and calls ``sink.write()``. The two kinds of failure
are decided once, here:

- transient (any exception but :class:`PermanentSinkError`): retried with exponential backoff
  and full jitter until ``retry_deadline``; then the items' futures fail with
  :class:`DeliveryFailed` and the connection answers ``nack`` (the agent resends later);
- permanent: the batch is split in halves until the records the sink refuses are found; those
  are reported in the future's result as refusals (the connection lists them as rejected in
  its ack and sends them to the dead-letter sinks), the others are written. A sink that names
  the records it refused (:class:`RefusedRecords`, e.g. a reading id already stored with other
  content) has written the others already: its refusals are reported as they are.

Dead-letter sinks (``dead_letter = true``) take :class:`DeadLetter` documents; they never hold
up ingest: when their queue is full, the dead letter is dropped and counted.

A reload swaps the set of runners (:meth:`Pipeline.replace`) between two batches, never inside
one: ``submit`` routes a batch to the set it started with, and a retired runner is closed (its
queue written, its batches' futures completed) only once no ``submit`` still holds the old set.
So an ack always means every sink of the route the batch was given has it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from telemetry.collector.metrics import Metrics
from telemetry.collector.runner import DeliveryFailed, Refusal, SinkRunner
from telemetry.log import get_logger
from telemetry.sinks.base import DeadLetter, Record

log = get_logger("telemetry.pipeline")

__all__ = ["DeliveryFailed", "Pipeline", "Refusal", "SinkRunner"]


@dataclass(eq=False)
class _RunnerSet:
    """One generation of runners, and how many ``submit`` calls are routing with it."""

    runners: list[SinkRunner]
    reading: list[SinkRunner] = field(init=False)
    dead_letter: list[SinkRunner] = field(init=False)
    busy: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.reading = [runner for runner in self.runners if not runner.dead_letter]
        self.dead_letter = [runner for runner in self.runners if runner.dead_letter]
        self.idle.set()

    def enter(self) -> None:
        self.busy += 1
        self.idle.clear()

    def leave(self) -> None:
        self.busy -= 1
        if not self.busy:
            self.idle.set()


class Pipeline:
    """Routes each batch to its sinks; one future per batch for the ack; dead letters."""

    def __init__(
        self,
        runners: list[SinkRunner],
        *,
        metrics: Metrics | None = None,
        dead_letter_max_bytes: int = 4096,
    ) -> None:
        self.metrics = metrics
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._set = _RunnerSet(list(runners))
        for runner in self._set.reading:
            runner.on_refused = self._refused_fire_and_forget
        #: Runners a reload took out, still draining (closed by :meth:`close` at the latest).
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def runners(self) -> list[SinkRunner]:
        """The runners of the current set (what ``/readyz`` and ``/metrics`` show)."""
        return self._set.runners

    @property
    def reading_runners(self) -> list[SinkRunner]:
        return self._set.reading

    @property
    def dead_letter_runners(self) -> list[SinkRunner]:
        return self._set.dead_letter

    @property
    def healthy(self) -> bool:
        """Every required sink's last write succeeded."""
        return all(runner.healthy for runner in self.runners if runner.required)

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

    def would_wait(self, count: int) -> bool:
        """True when submitting ``count`` readings would have to wait for room in a sink queue."""
        return any(runner.would_wait(count) for runner in self.reading_runners)

    async def submit(self, records: Sequence[Record]) -> asyncio.Future[list[list[Refusal]]]:
        """Queue ``records`` on every sink they route to; the result completes when all have
        written them, with each sink's refusals.

        Waits while a sink's queue is full (backpressure). The returned future fails with
        :class:`DeliveryFailed` when a sink gave up on the records for now.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[list[Refusal]]] = []
        current = self._set  # a reload during a wait below does not reroute this batch
        current.enter()
        try:
            for runner in current.reading:
                routed = runner.route(records)
                if routed:
                    future: asyncio.Future[list[Refusal]] = loop.create_future()
                    await runner.put(routed, future)
                    futures.append(future)
        finally:
            current.leave()
        return asyncio.gather(*futures)

    async def submit_fire_and_forget(self, records: Sequence[Record]) -> None:
        """Queue fire-and-forget records: nobody waits for them, failures are counted."""
        current = self._set
        current.enter()
        try:
            for runner in current.reading:
                routed = runner.route(records)
                if routed:
                    await runner.put(routed, None)
        finally:
            current.leave()

    def replace(self, runners: list[SinkRunner], *, drain_timeout: float) -> list[SinkRunner]:
        """Route every batch submitted from now on to ``runners`` (started already); retire
        the runners of the current set that are not among them, in the background: once no
        ``submit`` routes with the old set any more, each is drained (its queue written, its
        futures completed) and closed, within ``drain_timeout`` seconds. Returns them."""
        old = self._set
        self._set = _RunnerSet(list(runners))
        for runner in self._set.reading:
            runner.on_refused = self._refused_fire_and_forget
        retired = [runner for runner in old.runners if runner not in self._set.runners]
        if retired:
            task = asyncio.create_task(self._retire(old, retired, drain_timeout))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return retired

    async def _retire(self, old: _RunnerSet, retired: list[SinkRunner], timeout: float) -> None:
        """Drain and close ``retired`` once ``old`` routes nothing any more."""
        started = time.monotonic()
        await old.idle.wait()
        await self._close_runners(retired, max(0.5, timeout - (time.monotonic() - started)))
        log.info(
            "sinks_retired",
            sinks=[runner.name for runner in retired],
            written=sum(runner.written for runner in retired),
            seconds=round(time.monotonic() - started, 3),
        )

    async def retired(self) -> None:
        """Wait until every runner a reload took out is closed."""
        while self._retiring:
            await asyncio.wait(set(self._retiring))

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Hand dead letters to the dead-letter sinks; never waits (dropped when full)."""
        if not letters:
            return
        for runner in self.dead_letter_runners:
            if runner.would_wait(len(letters)) or runner.closing:
                runner._drop(len(letters), "dead_letter_queue_full")
            else:
                runner.put_nowait(letters, None)

    def refusals_to_dead_letters(self, refusals: list[Refusal]) -> list[DeadLetter]:
        """Dead letters for records a sink refused, carrying the sink's reason."""
        now = datetime.now(UTC)
        return [
            DeadLetter.of(
                record,
                agent=record.agent,
                reason=reason,
                received_at=now,
                max_bytes=self.dead_letter_max_bytes,
                reading_id=record.id,
            )
            for record, reason in refusals
        ]

    def _refused_fire_and_forget(self, runner: SinkRunner, refusals: list[Refusal]) -> None:
        if self.metrics is not None:
            self.metrics.drops.labels("sink_refused").inc(len(refusals))
        self.dead_letter(self.refusals_to_dead_letters(refusals))

    async def close(self, timeout: float) -> None:
        """Flush every sink (up to ``timeout`` seconds) and close them: the reading sinks
        together, then the dead-letter sinks, which their last refusals may still reach."""
        closing = self._close_runners(self.runners, timeout)
        await asyncio.gather(closing, *self._retiring)

    async def _close_runners(self, runners: Sequence[SinkRunner], timeout: float) -> None:
        """Close the reading runners of ``runners`` together, then the dead-letter ones."""
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(r.close(timeout) for r in runners if not r.dead_letter))
        remaining = max(0.5, deadline - time.monotonic())
        await asyncio.gather(*(r.close(remaining) for r in runners if r.dead_letter))
