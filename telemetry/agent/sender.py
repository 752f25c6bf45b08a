"""The sender: keeps a connection to a collector and moves the spool's batches over it.

How this works: :meth:`Sender.run` loops forever over the configured endpoints in the order
:class:`~telemetry.agent.endpoint_order.EndpointOrder` derives from the agent's id: a fleet
given the same ``endpoints`` list spreads evenly over them (and each agent comes back to the
same collector after a restart) instead of all landing on the first entry. Whatever ends a
connection (a ``goaway`` from a draining collector or from ``max_connection_age``, a loss, a
refused handshake), the next connection goes to the next endpoint of that order.

Each pass connects, sends ``hello``, waits for ``welcome`` (``connect_timeout``) and then
serves an :class:`~telemetry.agent.session.AgentSession`, the sans-I/O core that holds the
window, acks, nacks, goaway drain, timeouts and the send counters. This module only moves
bytes and applies the session's answers, with two tasks until the session ends:

- the *reader* awaits the collector's messages, hands each to the session's ``receive`` and
  applies what it answers (an ack removes the batch from the spool);
- the *writer* asks the session's ``next_action`` what to do, writes the frames it names (a
  batch, a heartbeat), drops from the spool what it says is too large, and otherwise sleeps
  on one :class:`asyncio.Event` (set by a new batch or an incoming message) with a timeout at
  the session's ``next_deadline``: no polling.

Everything unacked stays in the spool, so a lost connection costs a resend, never a reading.
Between two connections the sender waits a full-jitter backoff delay, reset only by a
connection that did useful work (a batch acked on it, or ``backoff_reset_after`` seconds
connected): a collector that welcomes and then closes, says goaway or errors is retried
slower and slower, up to ``reconnect_max``.

A welcome the session refuses (:func:`~telemetry.agent.session.check_welcome`) is a failed
handshake: the next endpoint is tried. Each write has a deadline, the earlier of
``write_timeout`` and the session's ack deadline, so a collector (or a path) that stops reading
cannot hold the writer in ``drain()`` forever. A spool write that fails when applying an ack
(disk full) does not end the connection: the ack is kept and applied again later (a resend
meanwhile is harmless, the reading ids make it idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

import structlog

from telemetry.agent.actions import (
    AckBatch,
    DropBatch,
    EndSession,
    Outcome,
    SenderStats,
    SendFrame,
    SplitBatch,
)
from telemetry.agent.connection import (
    CollectorError,
    CollectorLink,
    ConnectionClosed,
    remember,
)
from telemetry.agent.endpoint_order import EndpointOrder
from telemetry.agent.session import AgentSession, check_welcome, clip
from telemetry.agent.spool import Spool
from telemetry.backoff import Backoff
from telemetry.config import AgentSection
from telemetry.log import get_logger
from telemetry.protocol import Hello, ProtocolError
from telemetry.ratelog import RateLimitedLog
from telemetry.tls import client_tls

__all__ = ["Outcome", "Sender", "SenderStats"]

log = get_logger("telemetry.agent.sender")

#: Seconds between retries of acks the spool failed to apply (disk full), and between two
#: ``spool_write_failed`` events.
SPOOL_RETRY_INTERVAL = 1.0


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds passed, whichever comes first."""
    if timeout <= 0:
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
        #: TLS to the collectors, built once (an unreadable CA or key fails here, at start).
        self._tls = client_tls(section.tls)
        self._wake = asyncio.Event()
        #: Which endpoint the next connection goes to (spread by the agent's id).
        self._order = EndpointOrder(section.id, section.endpoints)
        #: Acks received whose spool write failed: applied again until one succeeds.
        self._unapplied: dict[int, AckBatch] = {}
        self._write_errors = RateLimitedLog(log, SPOOL_RETRY_INTERVAL)
        self._unapplied_retry_at = 0.0
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
                await self._run()
            finally:
                lookups.cancel()

    async def _run(self) -> None:
        while True:
            endpoint = self._order.next()
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
                next_endpoint=self._order.peek(),
            )
            await asyncio.sleep(delay)

    async def _connect_and_serve(self, endpoint: str) -> Outcome:
        section = self.section
        with structlog.contextvars.bound_contextvars(endpoint=endpoint):
            try:
                link = await CollectorLink.open(endpoint, section.connect_timeout, self._tls)
            except (OSError, TimeoutError) as exc:
                log.warning("connect_failed", error=str(exc) or type(exc).__name__)
                return Outcome.CONNECT_FAILED
            try:
                try:
                    welcome = await link.handshake(self._hello, section.connect_timeout)
                except CollectorError as exc:
                    log.error("collector_error", code=clip(exc.code), detail=clip(exc.detail))
                    return Outcome.ERROR
                except (OSError, TimeoutError, ConnectionClosed, ProtocolError) as exc:
                    log.warning("handshake_failed", error=clip(str(exc) or type(exc).__name__))
                    return Outcome.CONNECT_FAILED
                refused = check_welcome(welcome)
                if refused is not None:
                    log.error(
                        "welcome_refused",
                        collector=clip(welcome.collector),
                        reason=refused,
                        hint="the collector's ingest settings are wrong; trying the next endpoint",
                    )
                    return Outcome.PROTOCOL_ERROR
                started = time.monotonic()
                session = AgentSession(
                    welcome,
                    self.spool,
                    self.stats,
                    asyncio.get_running_loop().time(),
                    window=section.window,
                    ack_timeout=section.ack_timeout,
                    heartbeat_interval=section.heartbeat_interval,
                    retry_min=section.nack_retry_min,
                    retry_max=section.reconnect_max,
                )
                log.info(
                    "connected",
                    collector=clip(welcome.collector),
                    window=session.window,
                    max_frame_bytes=welcome.max_frame_bytes,
                    pending_batches=self.spool.batches,
                )
                self.endpoint = endpoint
                self.stats.connections += 1
                outcome = await self._serve(link, session)
                connected = time.monotonic() - started
                if session.acked_batches or connected >= section.backoff_reset_after:
                    self._backoff.reset()  # it did useful work: reconnect fast
                log.info(
                    "disconnected",
                    reason=outcome.value,
                    unacked=session.unacked,
                    acked_batches=session.acked_batches,
                    connected_seconds=round(connected, 3),
                )
                return outcome
            finally:
                self.endpoint = None
                await link.close()

    async def _serve(self, link: CollectorLink, session: AgentSession) -> Outcome:
        """Run the reader and the writer until the session ends; the first to end says why."""
        reader = asyncio.create_task(self._read(link, session), name="agent-reader")
        writer = asyncio.create_task(self._write(link, session), name="agent-writer")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _read(self, link: CollectorLink, session: AgentSession) -> Outcome:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await link.receive()
            except (ConnectionClosed, OSError, ProtocolError) as exc:
                return session.lost(str(exc) or type(exc).__name__).outcome
            action = session.receive(message, loop.time())
            if isinstance(action, EndSession):
                return action.outcome
            if action is not None:
                self._apply(action)
            self.wake()

    async def _write(self, link: CollectorLink, session: AgentSession) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Cleared before asking the session: a wake during our awaits is not lost.
                self._wake.clear()
                self._retry_unapplied()
                while (action := session.next_action(loop.time())) is not None:
                    if isinstance(action, EndSession):
                        return action.outcome
                    if isinstance(action, SendFrame):
                        started = loop.time()
                        # The write may not outlast the ack deadline, nor write_timeout.
                        deadline = started + self.section.write_timeout
                        ack_deadline = session.ack_deadline
                        if ack_deadline is not None:
                            deadline = min(deadline, max(ack_deadline, started))
                        try:
                            async with asyncio.timeout_at(deadline):
                                await link.send(action.frame)
                        except TimeoutError:
                            return session.stalled(loop.time() - started, loop.time()).outcome
                        session.written(action, loop.time())
                    else:
                        self._apply(action)
                wait = session.next_deadline - loop.time()
                if self._unapplied:
                    wait = min(wait, SPOOL_RETRY_INTERVAL)
                await _wait(self._wake, wait)
        except OSError as exc:
            return session.lost(str(exc) or type(exc).__name__).outcome

    def _apply(self, action: AckBatch | SplitBatch | DropBatch) -> None:
        """Do to the spool what the session decided, then tell the owner.

        A spool write that fails (disk full, I/O error) is logged at a bounded rate; an ack is
        kept and applied again later, a split or a drop is asked again by the next session.
        """
        try:
            if isinstance(action, AckBatch):
                self._unapplied.pop(action.seq, None)
                self.spool.ack(action.seq, action.rejected)
            elif isinstance(action, SplitBatch):
                seqs = self.spool.split(action.seq, action.max_frame_bytes)
                log.info("batch_split_into", seq=action.seq, seqs=seqs[:8], batches=len(seqs))
            else:
                self.spool.drop(action.seq, action.reason)
        except Exception as exc:
            if isinstance(action, AckBatch):
                self._unapplied[action.seq] = action
            self._write_errors.warning(
                "spool_write_failed",
                op=type(action).__name__,
                seq=action.seq,
                error=clip(str(exc) or type(exc).__name__),
                acks_waiting=len(self._unapplied),
            )
            return
        self._on_change()

    def _retry_unapplied(self) -> None:
        """Apply again the acks whose spool write failed (at most once a second)."""
        if not self._unapplied or time.monotonic() < self._unapplied_retry_at:
            return
        self._unapplied_retry_at = time.monotonic() + SPOOL_RETRY_INTERVAL
        for action in list(self._unapplied.values()):
            self._apply(action)
            if action.seq in self._unapplied:
                return  # still failing: next time
