"""The relay: a durable JetStream consumer feeding the collector's pipeline (docs/relay.md).

How this works: a fetch loop asks the durable pull consumer for up to ``fetch_batch``
messages, at most ``max_in_flight`` batches being in the pipeline at once (the bound on
memory). Each fetched batch becomes a task that decodes the messages into records, submits
them to the :class:`~telemetry.collector.pipeline.Pipeline` (routing, batching, retries,
bisection: the collector's, unchanged) and waits for every routed sink to commit. Then:

- committed: each message is acked;
- a sink refused records for good: they go to the dead-letter sinks, then are acked;
- a sink gave up for now (:class:`DeliveryFailed`): every message of the batch is nacked
  with ``redelivery_delay``; the server delivers them again, and the idempotent sinks store a
  reading once (its id travels in the payload);
- undecodable, or delivered more than ``max_deliveries`` times: dead-lettered, then acked.

While a batch waits for its sinks, the relay tells the server "in progress" every third of
``ack_wait``, so only a lost relay lets ``ack_wait`` expire. SIGTERM drains: readiness turns
503, fetching stops, the batches in the pipeline finish (acked or nacked), the sinks flush,
all within ``shutdown_timeout``; what is left unsettled is delivered again by the server.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

import nats.errors
from nats.aio.msg import Msg

from telemetry.backoff import backoff_delay
from telemetry.collector.pipeline import DeliveryFailed, Pipeline
from telemetry.collector.runner import SinkRunner
from telemetry.config import RelayConfig
from telemetry.log import get_logger
from telemetry.relay.books import RelayLedger, RelayMetrics, scrape_families
from telemetry.relay.consumer import Consumer, ConsumerError
from telemetry.relay.decode import Undecodable, decode_record
from telemetry.relay.http import RelayHttp
from telemetry.sinks.base import DeadLetter, Record, Sink
from telemetry.sinks.registry import build_sink

log = get_logger("telemetry.relay")

State = Literal["starting", "serving", "draining", "stopped"]
MSG_ID = "Nats-Msg-Id"


class Relay:
    """Consumes a JetStream stream as a durable and writes it to the configured sinks."""

    def __init__(self, config: RelayConfig, sinks: list[Sink] | None = None) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.ledger = RelayLedger()
        built = sinks if sinks is not None else [build_sink(c) for c in config.sinks]
        base = self.metrics.base
        self.pipeline = Pipeline(
            [SinkRunner(sink, cfg, base) for sink, cfg in zip(built, config.sinks, strict=True)],
            metrics=base,
            dead_letter_max_bytes=config.relay.dead_letter_max_bytes,
        )
        self.consumer = Consumer(config.relay)
        self.http = RelayHttp(self)
        self.state: State = "starting"
        #: The consumer's lag and unacked messages, as last read (None: not read yet).
        self.pending: int | None = None
        self.ack_pending: int | None = None
        self._window = asyncio.Semaphore(config.relay.max_in_flight)
        self._batches: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        base.watch(
            lambda: scrape_families(
                self.pipeline.runners, self.ledger, self.pending, self.ack_pending, self.ready
            )
        )

    @property
    def ready(self) -> bool:
        """Consuming, connected, and every required sink healthy: what ``/readyz`` says."""
        return self.state == "serving" and self.consumer.connected and self.pipeline.healthy

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the side port, the sinks, then consuming. NATS not answering yet is no
        error: the fetch loop keeps trying (and ``/readyz`` says 503 meanwhile)."""
        self._stop = asyncio.Event()
        if self.config.http.enabled:
            await self.http.start()
        try:
            await self.pipeline.start()
        except BaseException:
            await self.http.stop()
            self.state = "stopped"
            raise
        relay = self.config.relay
        self.state = "serving"
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="relay-fetch")
        self._tasks = [
            asyncio.create_task(self._every(relay.lag_interval, self._read_lag)),
            asyncio.create_task(self._every(relay.ledger_interval, self._log_ledger_now)),
        ]
        log.info(
            "relay_started",
            relay=relay.name,
            stream=relay.stream,
            durable=relay.durable,
            servers=self.consumer.servers,
            http=f"{self.config.http.host}:{self.http.port}" if self.config.http.enabled else None,
            sinks=[runner.name for runner in self.pipeline.runners],
        )

    def request_stop(self) -> None:
        """Begin the drain (what SIGTERM and SIGINT do)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Start, consume until SIGTERM/SIGINT or :meth:`request_stop`, then drain."""
        loop = asyncio.get_running_loop()
        await self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        # No live reload: a SIGHUP (systemd's reload) must not end the relay undrained.
        loop.add_signal_handler(signal.SIGHUP, log.warning, "reload_unsupported_restart_instead")
        try:
            assert self._stop is not None
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name)
        self.request_stop()

    async def shutdown(self) -> None:
        """Drain: stop fetching, settle the batches in the pipeline, flush the sinks."""
        if self.state in ("draining", "stopped"):
            return
        self.state = "draining"
        timeout = self.config.relay.shutdown_timeout
        deadline = time.monotonic() + timeout
        log.info("drain_started", batches=len(self._batches), timeout=timeout)
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            task.cancel()
        if self._fetcher is not None:  # a fetch under way ends within fetch_timeout
            _, pending = await asyncio.wait(
                {self._fetcher}, timeout=self.config.relay.fetch_timeout + 2
            )
            for task in pending:
                task.cancel()
        if self._batches:  # leave a fifth of the time for flushing the sinks
            _, pending = await asyncio.wait(set(self._batches), timeout=timeout * 0.8)
            for task in pending:
                task.cancel()  # its messages are nacked: another relay takes them at once
            if pending:
                log.warning("drain_batches_cancelled", batches=len(pending))
                await asyncio.wait(pending, timeout=2.0)
        await self.pipeline.close(timeout=max(0.5, deadline - time.monotonic()))
        await self.consumer.close()
        await self.http.stop()
        self.state = "stopped"
        self._log_ledger()
        log.info("relay_stopped", **self.ledger.as_dict())

    # --- fetching ---------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self._stop is None or self._stop.is_set()

    async def _fetch_loop(self) -> None:
        relay = self.config.relay
        attempt = 0
        while not self._stopping():
            await self._window.acquire()
            if self._stopping():
                self._window.release()
                return
            try:
                await self.consumer.start()  # at once when bound already
                messages = await self.consumer.fetch(relay.fetch_batch)
            except Exception as exc:  # a task root: log, back off, and go on consuming
                self._window.release()
                self.metrics.fetches.labels("error").inc()
                delay = backoff_delay(attempt, 0.5, 5.0)
                attempt += 1
                error = str(exc) if isinstance(exc, ConsumerError) else repr(exc)
                log.warning("relay_fetch_failed", error=error, retry_in=round(delay, 2))
                await self._sleep(delay)
                continue
            attempt = 0
            if not messages:
                self._window.release()
                self.metrics.fetches.labels("empty").inc()
                continue
            self.metrics.fetches.labels("messages").inc()
            task = asyncio.create_task(self._relay(messages))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._window.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("relay_batch_crashed", error=repr(task.exception()))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up for a stop."""
        assert self._stop is not None
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    # --- one fetched batch ------------------------------------------------------------------

    async def _relay(self, messages: list[Msg]) -> None:
        """Decode, submit, wait for the sinks, then ack, dead-letter or nak each message."""
        ledger = self.ledger
        count = len(messages)
        ledger.delivered += count
        ledger.in_flight += count
        try:
            records, kept, letters = self._decode(messages)
            if letters:
                self._dead_letter([letter for _, letter in letters])
                await self._settle([msg for msg, _ in letters], "dead_lettered")
            if records:
                await self._deliver(records, kept)
        finally:
            ledger.in_flight -= count

    def _decode(
        self, messages: list[Msg]
    ) -> tuple[list[Record], list[Msg], list[tuple[Msg, DeadLetter]]]:
        relay = self.config.relay
        records: list[Record] = []
        kept: list[Msg] = []
        letters: list[tuple[Msg, DeadLetter]] = []
        redelivered = 0
        for msg in messages:
            delivered = msg.metadata.num_delivered
            if delivered > 1:
                redelivered += 1
            if relay.max_deliveries and delivered > relay.max_deliveries:
                reason = f"delivered {delivered} times (max_deliveries {relay.max_deliveries})"
                letters.append((msg, self._letter(msg, reason)))
                continue
            try:
                records.append(decode_record(msg.data))
            except Undecodable as exc:
                letters.append((msg, self._letter(msg, f"undecodable message: {exc}")))
                continue
            kept.append(msg)
        self.pending = messages[-1].metadata.num_pending  # the lag, fresher than lag_interval
        if redelivered:
            self.ledger.redelivered += redelivered
            self.metrics.redeliveries.inc(redelivered)
        return records, kept, letters

    def _letter(self, msg: Msg, reason: str) -> DeadLetter:
        reading_id = (msg.headers or {}).get(MSG_ID)
        agent = reading_id.split(":", 1)[0] if reading_id else "unknown"
        return DeadLetter.of(
            msg.data,
            agent=agent,
            reason=reason,
            received_at=datetime.now(UTC),
            max_bytes=self.config.relay.dead_letter_max_bytes,
            reading_id=reading_id,
        )

    async def _deliver(self, records: list[Record], messages: list[Msg]) -> None:
        try:
            done = await self.pipeline.submit(records)
            refusals_by_sink = await self._keep_alive(done, messages)
        except DeliveryFailed as exc:
            log.warning(
                "relay_delivery_failed",
                sink=exc.sink,
                reason=exc.reason,
                messages=len(messages),
                redelivery_in=self.config.relay.redelivery_delay,
            )
            await self._settle(messages, "nacked")
            return
        except asyncio.CancelledError:  # the drain ran out of time: another relay takes them
            await asyncio.shield(self._settle(messages, "nacked", delay=0))
            raise
        refused: dict[int, str] = {}
        for refusals in refusals_by_sink:
            if refusals:
                self.pipeline.dead_letter(self.pipeline.refusals_to_dead_letters(refusals))
                for record, reason in refusals:
                    refused.setdefault(id(record), reason)
        if refused:
            log.warning("relay_refused", readings=len(refused), first=next(iter(refused.values())))
            by_id = {id(record): msg for record, msg in zip(records, messages, strict=True)}
            gone = [by_id[key] for key in refused]
            await self._settle(gone, "dead_lettered")
            messages = [
                msg
                for record, msg in zip(records, messages, strict=True)
                if id(record) not in refused
            ]
        await self._settle(messages, "acked")

    async def _keep_alive(
        self, done: asyncio.Future[list[list[tuple[Record, str]]]], messages: Sequence[Msg]
    ) -> list[list[tuple[Record, str]]]:
        """Wait for ``done``, telling the server "in progress" every third of ``ack_wait``."""
        interval = self.config.relay.ack_wait / 3
        while True:
            finished, _ = await asyncio.wait({done}, timeout=interval)
            if finished:
                return done.result()
            try:
                for msg in messages:
                    await msg.in_progress()
            except (nats.errors.Error, OSError) as exc:
                log.warning("relay_in_progress_failed", error=self.consumer.scrub(repr(exc)))

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        log.warning("relay_dead_letters", messages=len(letters), first=letters[0].reason)
        self.pipeline.dead_letter(letters)

    async def _settle(
        self,
        messages: Sequence[Msg],
        outcome: Literal["acked", "nacked", "dead_lettered"],
        delay: float | None = None,
    ) -> None:
        """Ack (acked, dead_lettered) or nak each message; count them in the ledger."""
        if not messages:
            return
        nak_delay = self.config.relay.redelivery_delay if delay is None else delay
        failed = 0
        for msg in messages:
            try:
                if outcome == "nacked":
                    await msg.nak(delay=nak_delay or None)
                else:
                    await msg.ack()
            except (nats.errors.Error, OSError):
                failed += 1  # delivered again after ack_wait: the sinks store it once
        if failed:
            self.metrics.ack_failures.inc(failed)
            log.warning("relay_ack_failed", messages=failed, outcome=outcome)
        count = len(messages)
        setattr(self.ledger, outcome, getattr(self.ledger, outcome) + count)
        self.metrics.messages.labels(outcome).inc(count)

    # --- background -------------------------------------------------------------------------

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            await action()

    async def _read_lag(self) -> None:
        if not self.consumer.connected:
            return
        try:
            self.pending, self.ack_pending = await self.consumer.lag()
        except ConsumerError as exc:
            log.info("relay_lag_unread", error=str(exc))

    async def _log_ledger_now(self) -> None:
        self._log_ledger()

    def _log_ledger(self) -> None:
        log.info("relay_ledger", balanced=self.ledger.balanced, **self.ledger.as_dict())
