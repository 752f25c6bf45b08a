"""The sender: keeps a connection to a collector and moves the spool's batches over it.

How this works: :meth:`Sender.run` loops forever over the configured endpoints, in turn.
Each pass connects, sends ``hello``, waits for ``welcome`` (``connect_timeout``) and then runs
a session of two tasks until the connection ends:

- the *reader* handles ``ack`` (the batch leaves the spool), ``nack`` (the batch is resent
  after ``retry_after_ms``), ``goaway`` (stop sending, let in-flight batches be acked, then
  reconnect elsewhere) and ``error`` (log, close, reconnect);
- the *writer* sends spooled batches in ``seq`` order while fewer than ``window`` are unacked
  (nacked batches waiting for their retry still count), a heartbeat after
  ``heartbeat_interval`` of silence, and ends the session when the oldest in-flight batch has
  waited ``ack_timeout``. It sleeps on one :class:`asyncio.Event`, set by a new batch or an
  incoming message, with a timeout at the next deadline: no polling.

Everything unacked stays in the spool, so a lost connection costs a resend, never a reading.
Between two connections the sender waits a full-jitter backoff delay, reset by a ``welcome``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from telemetry.agent.backoff import Backoff
from telemetry.agent.connection import CollectorError, CollectorLink, ConnectionClosed, remember
from telemetry.agent.spool import BATCH_TOO_LARGE, Spool, SpooledBatch
from telemetry.config import AgentSection
from telemetry.log import get_logger
from telemetry.protocol import (
    HEADER_SIZE,
    HEARTBEAT,
    Ack,
    Error,
    Goaway,
    Hello,
    Nack,
    ProtocolError,
    Welcome,
)

log = get_logger("telemetry.agent.sender")


class Outcome(enum.Enum):
    """Why a connection ended."""

    CONNECT_FAILED = "connect_failed"
    LOST = "lost"
    ERROR = "error"
    GOAWAY = "goaway"
    ACK_TIMEOUT = "ack_timeout"


@dataclass
class SenderStats:
    """Counters of the sender since start (readings counted once per batch ack)."""

    batches_sent: int = 0
    batches_resent: int = 0
    sent_readings: int = 0  # first sends only
    acked_readings: int = 0
    rejected_readings: int = 0
    nacks: int = 0
    connections: int = 0


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds passed, whichever comes first."""
    if timeout is not None and timeout <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


class Sender:
    """Delivers the batches of a :class:`Spool` to the collectors of an :class:`AgentSection`.

    ``on_change`` is called after batches leave the spool (acked or dropped), so the owner
    can tell when everything is delivered. Call :meth:`wake` after adding a batch.
    """

    def __init__(
        self,
        section: AgentSection,
        spool: Spool,
        *,
        on_change: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.section = section
        self.spool = spool
        self.stats = SenderStats()
        #: The endpoint of the current connection (after ``welcome``), else None.
        self.endpoint: str | None = None
        self._on_change = on_change or (lambda: None)
        self._backoff = Backoff(section.reconnect_min, section.reconnect_max, rng)
        self._wake = asyncio.Event()
        self._next_endpoint = 0
        self._highest_sent = -1  # a seq at or below it is a resend
        # Built now so that an id the protocol refuses fails here, not on every connect.
        self._hello = Hello(agent=section.id, token=section.token)

    def wake(self) -> None:
        """Tell the sender the spool has a new batch."""
        self._wake.set()

    async def run(self) -> None:
        """Connect, send and reconnect until cancelled. The task root of the sender."""
        endpoints = self.section.endpoints
        # Every endpoint's address, looked up now while the names resolve: a fallback for when
        # a lookup fails later (a failover is exactly when DNS may be slow).
        lookups = asyncio.create_task(remember(endpoints, self.section.connect_timeout))
        with structlog.contextvars.bound_contextvars(agent=self.section.id):
            try:
                await self._run(endpoints)
            finally:
                lookups.cancel()

    async def _run(self, endpoints: list[str]) -> None:
        while True:
            endpoint = endpoints[self._next_endpoint % len(endpoints)]
            self._next_endpoint += 1
            try:
                outcome = await self._connect_and_serve(endpoint)
            except Exception:  # a bug must not end delivery: log it and reconnect
                log.exception("sender_failed", endpoint=endpoint)
                outcome = Outcome.LOST
            delay = self._backoff.next_delay()
            log.info(
                "reconnect_scheduled",
                after=outcome.value,
                delay=round(delay, 3),
                attempt=self._backoff.attempt,
                next_endpoint=endpoints[self._next_endpoint % len(endpoints)],
            )
            await asyncio.sleep(delay)

    async def _connect_and_serve(self, endpoint: str) -> Outcome:
        section = self.section
        with structlog.contextvars.bound_contextvars(endpoint=endpoint):
            try:
                conn = await CollectorLink.open(endpoint, section.connect_timeout)
            except (OSError, TimeoutError) as exc:
                log.warning("connect_failed", error=str(exc) or type(exc).__name__)
                return Outcome.CONNECT_FAILED
            try:
                try:
                    welcome = await conn.handshake(self._hello, section.connect_timeout)
                except CollectorError as exc:
                    log.error("collector_error", code=exc.code, detail=exc.detail)
                    return Outcome.ERROR
                except (OSError, TimeoutError, ConnectionClosed, ProtocolError) as exc:
                    log.warning("handshake_failed", error=str(exc) or type(exc).__name__)
                    return Outcome.CONNECT_FAILED
                self._backoff.reset()
                self.stats.connections += 1
                window = min(section.window, welcome.window)
                log.info(
                    "connected",
                    collector=welcome.collector,
                    window=window,
                    max_frame_bytes=welcome.max_frame_bytes,
                    pending_batches=self.spool.batches,
                )
                self.endpoint = endpoint
                session = _Session(self, conn, window, welcome.max_frame_bytes)
                outcome = await session.run()
                log.info("disconnected", reason=outcome.value, unacked=len(session.inflight))
                return outcome
            finally:
                self.endpoint = None
                await conn.close()


class _Session:
    """One welcomed connection: the writer and reader tasks and the window they share."""

    def __init__(
        self, sender: Sender, conn: CollectorLink, window: int, max_frame_bytes: int
    ) -> None:
        self.sender = sender
        self.spool = sender.spool
        self.section = sender.section
        self.conn = conn
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.loop = asyncio.get_running_loop()
        #: seq -> ack deadline; insertion order is send order, so the first is the oldest.
        self.inflight: dict[int, float] = {}
        #: seq -> when to resend; nacked batches hold their window slot until resent.
        self.retry: dict[int, float] = {}
        self.cursor = 0  # every seq below it was sent on this connection, or is gone
        self.drain_deadline: float | None = None
        self.last_write = self.loop.time()

    async def run(self) -> Outcome:
        reader = asyncio.create_task(self._read_loop(), name="agent-reader")
        writer = asyncio.create_task(self._write_loop(), name="agent-writer")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    # --- reader -------------------------------------------------------------------------

    async def _read_loop(self) -> Outcome:
        while True:
            try:
                message = await self.conn.receive()
            except (ConnectionClosed, OSError, ProtocolError) as exc:
                log.warning("connection_lost", error=str(exc) or type(exc).__name__)
                return Outcome.LOST
            if isinstance(message, Ack):
                self._on_ack(message)
            elif isinstance(message, Nack):
                self._on_nack(message)
            elif isinstance(message, Goaway):
                log.info("goaway_received", reason=message.reason, unacked=len(self.inflight))
                if self.drain_deadline is None:
                    self.drain_deadline = self.loop.time() + self.section.ack_timeout
            elif isinstance(message, Error):
                log.error("collector_error", code=message.code, detail=message.detail)
                return Outcome.ERROR
            elif isinstance(message, Welcome):
                log.warning("connection_lost", error="unexpected second welcome")
                return Outcome.LOST
            self.sender.wake()

    def _on_ack(self, ack: Ack) -> None:
        self.inflight.pop(ack.seq, None)
        self.retry.pop(ack.seq, None)
        batch = self.spool.get(ack.seq)
        if batch is None:  # dropped from a full spool while in flight, or a duplicate ack
            log.debug("ack_for_unknown_batch", seq=ack.seq)
            return
        rejected = {r.index for r in ack.rejected if 0 <= r.index < len(batch)}
        self.spool.ack(ack.seq, len(rejected))
        for rejection in ack.rejected:
            log.warning(
                "reading_rejected", seq=ack.seq, index=rejection.index, errors=rejection.errors
            )
        accepted = len(batch) - len(rejected)
        if ack.accepted != accepted:
            log.warning("ack_count_mismatch", seq=ack.seq, accepted=ack.accepted, expected=accepted)
        stats = self.sender.stats
        stats.acked_readings += accepted
        stats.rejected_readings += len(rejected)
        log.debug("batch_acked", seq=ack.seq, accepted=accepted, rejected=len(rejected))
        self.sender._on_change()

    def _on_nack(self, nack: Nack) -> None:
        if self.inflight.pop(nack.seq, None) is None:
            log.debug("nack_for_unknown_batch", seq=nack.seq)
            return
        delay = max(0, nack.retry_after_ms) / 1000
        self.retry[nack.seq] = self.loop.time() + delay
        self.sender.stats.nacks += 1
        log.info("batch_nacked", seq=nack.seq, reason=nack.reason, retry_after_ms=delay * 1000)

    # --- writer -------------------------------------------------------------------------

    async def _write_loop(self) -> Outcome:
        try:
            return await self._write()
        except OSError as exc:
            log.warning("connection_lost", error=str(exc) or type(exc).__name__)
            return Outcome.LOST

    async def _write(self) -> Outcome:
        wake = self.sender._wake
        section = self.section
        while True:
            # Cleared before looking at the state: a set during our awaits is not lost.
            wake.clear()
            now = self.loop.time()
            if self.drain_deadline is not None:
                if not self.inflight:
                    return Outcome.GOAWAY
                if now >= self.drain_deadline:
                    log.warning("goaway_drain_timeout", unacked=len(self.inflight))
                    return Outcome.GOAWAY
            if self.inflight:
                seq, deadline = next(iter(self.inflight.items()))
                if now >= deadline:
                    log.warning("ack_timeout", seq=seq, ack_timeout=section.ack_timeout)
                    return Outcome.ACK_TIMEOUT
            if self.drain_deadline is None:
                await self._send_due_retries(now)
                await self._send_new()
            if self.loop.time() - self.last_write >= section.heartbeat_interval:
                await self.conn.send(HEARTBEAT)
                self.last_write = self.loop.time()
                log.debug("heartbeat_sent")
            await _wait(wake, self._next_deadline() - self.loop.time())

    def _next_deadline(self) -> float:
        deadlines = [self.last_write + self.section.heartbeat_interval]
        if self.inflight:
            deadlines.append(next(iter(self.inflight.values())))
        if self.drain_deadline is not None:
            deadlines.append(self.drain_deadline)
        elif self.retry:
            deadlines.append(min(self.retry.values()))
        return min(deadlines)

    async def _send_due_retries(self, now: float) -> None:
        for seq in [seq for seq, due in self.retry.items() if due <= now]:
            del self.retry[seq]
            batch = self.spool.get(seq)
            if batch is not None:
                await self._send(batch)

    async def _send_new(self) -> None:
        while len(self.inflight) + len(self.retry) < self.window:
            batch = self._next_batch()
            if batch is None:
                return
            if len(batch.frame) - HEADER_SIZE > self.max_frame_bytes:
                # The collector would close the connection on it, forever: drop and count it.
                log.error(
                    "batch_too_large",
                    seq=batch.seq,
                    bytes=len(batch.frame) - HEADER_SIZE,
                    max_frame_bytes=self.max_frame_bytes,
                )
                self.spool.drop(batch.seq, BATCH_TOO_LARGE)
                self.sender._on_change()
                continue
            await self._send(batch)

    def _next_batch(self) -> SpooledBatch | None:
        oldest = self.spool.oldest_seq
        if oldest is None:
            return None
        self.cursor = max(self.cursor, oldest)
        while self.cursor < self.spool.next_seq:
            batch = self.spool.get(self.cursor)
            self.cursor += 1
            if batch is not None:
                return batch
        return None

    async def _send(self, batch: SpooledBatch) -> None:
        # In flight before the write: an ack may arrive while drain() waits.
        self.inflight[batch.seq] = self.loop.time() + self.section.ack_timeout
        await self.conn.send(batch.frame)
        self.last_write = self.loop.time()
        stats = self.sender.stats
        stats.batches_sent += 1
        resend = batch.seq <= self.sender._highest_sent
        if resend:
            stats.batches_resent += 1
        else:
            self.sender._highest_sent = batch.seq
            stats.sent_readings += len(batch)
        log.debug("batch_sent", seq=batch.seq, readings=len(batch), resend=resend)
