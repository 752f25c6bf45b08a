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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from telemetry.collector.metrics import Metrics
from telemetry.collector.runner import DeliveryFailed, Refusal, SinkRunner
from telemetry.log import get_logger
from telemetry.sinks.base import DeadLetter, Record

log = get_logger("telemetry.pipeline")

__all__ = ["DeliveryFailed", "Pipeline", "Refusal", "SinkRunner"]


class Pipeline:
    """Routes each batch to its sinks; one future per batch for the ack; dead letters."""

    def __init__(
        self,
        runners: list[SinkRunner],
        *,
        metrics: Metrics | None = None,
        dead_letter_max_bytes: int = 4096,
    ) -> None:
        self.runners = runners
        self.reading_runners = [runner for runner in runners if not runner.dead_letter]
        self.dead_letter_runners = [runner for runner in runners if runner.dead_letter]
        self.metrics = metrics
        self.dead_letter_max_bytes = dead_letter_max_bytes
        for runner in self.reading_runners:
            runner.on_refused = self._refused_fire_and_forget

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
        for runner in self.reading_runners:
            routed = runner.route(records)
            if routed:
                future: asyncio.Future[list[Refusal]] = loop.create_future()
                await runner.put(routed, future)
                futures.append(future)
        return asyncio.gather(*futures)

    async def submit_fire_and_forget(self, records: Sequence[Record]) -> None:
        """Queue fire-and-forget records: nobody waits for them, failures are counted."""
        for runner in self.reading_runners:
            routed = runner.route(records)
            if routed:
                await runner.put(routed, None)

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
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(runner.close(timeout) for runner in self.reading_runners))
        remaining = max(0.5, deadline - time.monotonic())
        await asyncio.gather(*(runner.close(remaining) for runner in self.dead_letter_runners))
